// Checks the arguments of exec()/spawn() and turns them into the native
// request, with 0.6.0's semantics:
//  - the environment is the guest init's plus the call's `env`;
//  - without a working directory (no call `cwd`, no boot `cwd`) the command
//    runs as is, from "/";
//  - with one, it runs as 0.6.0 ran it: `/bin/sh -lc 'cd "$SANDBOX_EXEC_CWD"
//    && exec "$@"'`, with SANDBOX_EXEC_CWD and PWD set to it. So a login
//    profile is read (/etc/profile: PATH and the rest), a relative `cwd`
//    resolves against "/", and a `cwd` that does not exist fails as the
//    shell's `cd` does (exit 2, its message on stderr).

export interface SandboxExecOptions {
  /** Working directory in the guest; defaults to the boot `cwd`. Relative: against "/". */
  readonly cwd?: string;
  /** Variables for the process, on top of the guest's base environment. */
  readonly env?: Record<string, string>;
}

export type SandboxSpawnOptions = SandboxExecOptions;

export interface ProcessRequest {
  readonly id: number;
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
}

/** 0.6.0's `cd` then `exec`, in a login shell; "$@" is the command and its args. */
const CD_THEN_EXEC = 'cd "$SANDBOX_EXEC_CWD" && exec "$@"';

export function processRequest(
  method: "exec" | "spawn",
  id: number,
  defaultCwd: string | undefined,
  command: unknown,
  args: unknown,
  options: unknown,
): ProcessRequest {
  const invalid = (reason: string) => new Error(`invalid sandbox ${method} call: ${reason}`);
  if (typeof command !== "string" || command === "" || command.includes("\0")) {
    throw invalid("command must be a non-empty string without NUL");
  }
  if (!Array.isArray(args) || !args.every((arg) => typeof arg === "string" && !arg.includes("\0"))) {
    throw invalid("args must be an array of strings without NUL");
  }
  if (typeof options !== "object" || options === null) throw invalid("options must be an object");
  const { cwd, env } = options as { cwd?: unknown; env?: unknown };
  if (cwd !== undefined && (typeof cwd !== "string" || cwd.includes("\0"))) {
    throw invalid("cwd must be a string without NUL");
  }
  if (env !== undefined && (typeof env !== "object" || env === null || Array.isArray(env))) {
    throw invalid("env must be an object of strings");
  }
  const variables: Record<string, string> = {};
  for (const [name, value] of Object.entries(env ?? {})) {
    if (name === "" || name.includes("=") || name.includes("\0")) {
      throw invalid(`env name ${JSON.stringify(name)} must be non-empty, without "=" or NUL`);
    }
    if (typeof value !== "string" || value.includes("\0")) {
      throw invalid(`env ${name} must be a string without NUL`);
    }
    variables[name] = value;
  }
  const directory = cwd ?? defaultCwd;
  if (directory === undefined) return { id, command, args: [...args], cwd: "/", env: variables };
  return {
    id,
    command: "/bin/sh",
    args: ["-lc", CD_THEN_EXEC, `sandbox-${method}`, command, ...args],
    cwd: "/",
    env: { ...variables, SANDBOX_EXEC_CWD: directory, PWD: directory },
  };
}
