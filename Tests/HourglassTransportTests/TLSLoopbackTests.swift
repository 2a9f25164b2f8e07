import Testing

/// The suites that start TLS servers on loopback (call types over both transports, and the
/// TLS transport's own cases).
@Suite
enum TLSLoopbackTests {}
