// Package faults holds the fault-injection suite (tests only): it runs the
// real persister binary against real redis-server and FerretDB processes,
// with a producer that records every id Redis returned (the ledger), injects
// the faults of the reliability fault matrix (../shared/docs/reliability.md)
// one row at a time, and checks after each that every ledger entry is stored
// exactly once in its own tenant's database (or reported with a reason),
// that nothing unexpected or cross-tenant was stored, and that the pending
// list is empty.
//
// Each row prints one line: entries published, stored, duplicates, lost, and
// the time to recover. When PERSISTER_FAULTS_REPORT names a file, the lines
// are also written there (scripts/test.sh prints it).
package faults
