// Makes `Symbol.asyncDispose` exist before anything uses it.
//
// Why: Node 20.0-20.3 do not define Symbol.asyncDispose (it arrived in 20.4),
// but this package supports Node >= 20. Users on Node 20 write
// `await using lane = await sandbox.boot()`, which TypeScript compiles into
// helper code that looks up Symbol.asyncDispose at run time and throws when it
// is missing; and our instance class uses it as a method key. We install the
// same registered symbol Node itself uses (Symbol.for("nodejs.asyncDispose")),
// so objects keep working unchanged after an upgrade to a Node that has it.

if (typeof Symbol.asyncDispose !== "symbol") {
  Object.defineProperty(Symbol, "asyncDispose", {
    value: Symbol.for("nodejs.asyncDispose"),
    writable: false,
    enumerable: false,
    configurable: false,
  });
}

export {};
