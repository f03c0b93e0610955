// Test certificates made with openssl: a CA and one server leaf. Used by
// the HTTP interception tests and bench/http.mjs.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A CA and a leaf for `name`, made with openssl; returns the CA's path and the leaf. */
export function pki(dir, label, name) {
  const ca = join(dir, `${label}-ca`);
  const leaf = join(dir, `${label}-leaf`);
  const openssl = (args) => execFileSync("openssl", args, { stdio: "pipe" });
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-subj", `/CN=${label} test CA`, "-keyout", `${ca}.key`, "-out", `${ca}.pem`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${name}`,
    "-keyout", `${leaf}.key`, "-out", `${leaf}.csr`]);
  writeFileSync(`${leaf}.ext`, `subjectAltName=DNS:${name}\n`);
  openssl(["x509", "-req", "-in", `${leaf}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-days", "2",
    "-extfile", `${leaf}.ext`, "-out", `${leaf}.pem`]);
  return { ca: `${ca}.pem`, key: readFileSync(`${leaf}.key`), cert: readFileSync(`${leaf}.pem`) };
}

