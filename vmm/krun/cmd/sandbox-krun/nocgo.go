//go:build !cgo || !(linux || darwin)

// Command sandbox-krun runs libkrun VMs for the libkrun engine. It needs
// cgo (it loads libkrun with dlopen) on Linux or macOS; this build has
// neither, so it only says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("this sandbox-krun was built without cgo (or for an unsupported OS): rebuild it with CGO_ENABLED=1 on Linux or macOS (scripts/build.sh does), or use SANDBOX_ENGINE=qemu")
	os.Exit(1)
}
