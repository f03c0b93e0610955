// Sockets for the origins. The origins' addresses live in a network
// namespace of their own, one veth hop from the test's (run.sh makes it and
// names it in SANDBOX_E2E_ORIGINS_NETNS): the sandbox refuses the test
// namespace's own addresses as the host's. A short-lived child process
// opens each socket in that namespace and hands it over (Node passes
// sockets between processes with their IPC channel); the server's code
// runs in the test's process as before.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const CHILD = fileURLToPath(new URL("./origins-child.mjs", import.meta.url));

function openInOrigins(request) {
  const netns = process.env.SANDBOX_E2E_ORIGINS_NETNS;
  if (!netns) throw new Error("SANDBOX_E2E_ORIGINS_NETNS is not set: run this file through tests/e2e-net/run.sh");
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", netns, process.execPath, CHILD], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    child.once("error", reject);
    child.once("exit", (code, signal) => reject(new Error(`origin socket helper exited (${signal ?? code}) before answering`)));
    child.once("message", (answer, socket) => {
      if (answer.error) reject(new Error(`cannot open ${request.kind} ${request.host}:${request.port} in ${netns}: ${answer.error}`));
      else resolve(socket);
    });
    child.send(request);
  });
}

/** Makes `server` (net, http, https or http2) listen on host:port in the origins' namespace. */
export async function listenInOrigins(server, port, host) {
  const listening = await openInOrigins({ kind: "tcp", port, host });
  await new Promise((resolve, reject) => server.listen(listening, resolve).once("error", reject));
}

/** A dgram socket bound to host:port in the origins' namespace. */
export function bindInOrigins(port, host) {
  return openInOrigins({ kind: "udp", port, host });
}
