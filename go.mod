module github.com/torkbot/sandbox

go 1.26.0

require (
	github.com/hashicorp/yamux v0.1.2
	golang.org/x/sys v0.50.0
)
