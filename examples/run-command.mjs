// Boots the built-in debian:13-slim image, runs one command in it and prints
// what it printed. Usage: node examples/run-command.mjs [command [args...]]
import { defineSandbox, rootfs } from "@torkbot/sandbox";

const [command, ...args] = process.argv.length > 2
  ? process.argv.slice(2)
  : ["sh", "-c", 'echo "hello from $(hostname): $(uname -sr), $(. /etc/os-release; echo $PRETTY_NAME)"'];

const started = performance.now();
const sandbox = defineSandbox({ rootfs: rootfs.builtIn("debian:13-slim") });
// `await using lane = ...` does this in TypeScript and on Node 24+.
const lane = await sandbox.boot({ cwd: "/tmp" });
const booted = performance.now();
let result;
try {
  result = await lane.exec(command, args);
} finally {
  await lane.close();
}
process.stdout.write(result.stdout);
process.stderr.write(result.stderr);
console.error(`[boot ${(booted - started).toFixed(0)} ms, exec ${(performance.now() - booted).toFixed(0)} ms, exit ${result.exitCode}]`);
process.exitCode = result.exitCode;
