// Checks the arguments of exec()/spawn() and turns them into the native
// request. Working directory: the call's `cwd`, else the boot `cwd`, else "/".

export interface SandboxExecOptions {
  /** Absolute guest path; defaults to the boot `cwd`, else "/". */
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

export function processRequest(
  method: "exec" | "spawn",
  id: number,
  defaultCwd: string,
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
  if (cwd !== undefined && (typeof cwd !== "string" || !cwd.startsWith("/") || cwd.includes("\0"))) {
    throw invalid("cwd must be an absolute path without NUL");
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
  return { id, command, args: [...args], cwd: cwd ?? defaultCwd, env: variables };
}
