// Types of bin/node-flags.js (plain JS so the launcher runs before any TypeScript tooling).
/** V8 flags the sidecar runs with. */
export declare const NODE_FLAGS: string[];
/** Flags of NODE_FLAGS whose option the user has not set (command line or NODE_OPTIONS). */
export declare function missingNodeFlags(execArgv?: string[], nodeOptions?: string): string[];
