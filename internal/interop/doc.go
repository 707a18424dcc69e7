// Package interop holds the interop test of the persister with the real
// Chronow library (TestChronowInterop): Chronow v0.9.6, vendored verbatim in
// third_party/chronow, is bundled with esbuild into bin/chronow-interop.cjs
// (make chronow-interop) and run with node as the producer; every entry and
// shared-memory value it wrote to Redis is then checked, field for field and
// type for type, against what the persister stored in MongoDB. See
// docs/interop.md.
package interop
