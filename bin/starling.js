#!/usr/bin/env -S node --max-semi-space-size=1
// The `starling` executable: Node 24 runs the TypeScript entry directly (type stripping). The
// main thread's young generation is kept small from the start, as `runtime.semiSpaceMiB` keeps
// the workers' (a running isolate's cannot be resized; docs/architecture.md, "Memory").
import "../src/main.ts";
