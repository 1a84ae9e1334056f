#!/usr/bin/env node
// The `starling` executable: Node 24 runs the TypeScript entry directly (type stripping).
import "../src/main.ts";
