//! mailbackup-tools: operator and developer tools (inspect, spool generation, benchmarks).

fn main() {}
