// The type of a parsed JSON reply in the tests. Tests read fields of the agent's answers and the
// assertions that follow check them; declaring every reply's shape again here would only repeat
// src/daemon/api.ts, and a wrong field fails the assertion anyway.

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above: replies are checked by assertions, not by the compiler
export type Json = any;
