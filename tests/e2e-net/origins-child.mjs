// Started by origins.mjs inside the origins' network namespace: opens the
// one socket asked for, sends it to the parent, and exits.
import { createSocket } from "node:dgram";
import { createServer } from "node:net";

process.once("message", ({ kind, port, host }) => {
  const done = (socket) => process.send({ ok: true }, socket, () => process.exit(0));
  const fail = (error) => process.send({ error: error.message }, () => process.exit(1));
  if (kind === "tcp") {
    const server = createServer();
    server.once("error", fail);
    server.listen({ port, host }, () => done(server));
  } else {
    const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
    socket.once("error", fail);
    socket.bind(port, host, () => done(socket));
  }
});
