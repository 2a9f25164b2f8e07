#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Writes text to one of the process's standard streams without Foundation's buffering.
enum FileHandleOutput {
  case standardOutput
  case standardError

  /// Writes `text` as UTF-8, unbuffered.
  func write(_ text: String) {
    let fd: Int32 = self == .standardOutput ? 1 : 2
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
      let written = bytes.withUnsafeMutableBytes { raw in
        Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
      }
      if written <= 0 { return }
      offset += written
    }
  }
}

/// An error that is the user's to fix (bad schedule, bad flag value): printed on stderr, exit 2.
struct UsageError: Error, CustomStringConvertible {
  /// What was wrong, naming the field, e.g. `cron: hour 24 out of range 0-23`.
  var description: String
}

/// The output format every client command accepts.
enum OutputFormat: String, CaseIterable, Sendable {
  case table
  case json
}
