#!/usr/bin/env node
// The command-line entry of @torkbot/sandbox (`npx @torkbot/sandbox <command>`).
// Plain JavaScript over the compiled package, so it runs as shipped.

import { createRequire } from "node:module";
import { ownVersion, processSetupMacosEnvironment, setupMacos } from "../dist/macos.js";

const USAGE = `usage: npx @torkbot/sandbox <command>

commands:
  setup-macos   sign the installed macOS helper and addon ad hoc with the
                hypervisor entitlement (run once after each install or update;
                on other systems it says so and does nothing)
  --version     print the version
  --help        print this text`;

const [command, ...rest] = process.argv.slice(2);
switch (command) {
  case "setup-macos": {
    if (rest.length > 0) usageError(`setup-macos takes no arguments (got ${rest.join(" ")})`);
    // Resolved from the package's own location: the platform package signed
    // is the one this copy of @torkbot/sandbox loads at boot().
    const require = createRequire(import.meta.url);
    process.exitCode = setupMacos(processSetupMacosEnvironment((specifier) => require.resolve(specifier)));
    break;
  }
  case "--version":
  case "-v":
    console.log(ownVersion() ?? "unknown");
    break;
  case "--help":
  case "-h":
  case "help":
    console.log(USAGE);
    break;
  case undefined:
    usageError("no command given");
    break;
  default:
    usageError(`unknown command ${JSON.stringify(command)}`);
}

function usageError(message) {
  console.error(`torkbot-sandbox: ${message}\n\n${USAGE}`);
  process.exit(2);
}
