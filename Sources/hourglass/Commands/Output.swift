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

/// Aligned plain-text tables: a header row, then data rows, columns two spaces apart.
enum TextTable {
  /// Renders `rows` (the first is the header); columns listed in `rightAligned` are padded on
  /// the left, the others on the right; the last column is never padded.
  static func render(_ rows: [[String]], rightAligned: Set<Int> = []) -> String {
    guard let header = rows.first else { return "" }
    var widths = [Int](repeating: 0, count: header.count)
    for row in rows {
      for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
    }
    return rows.map { row in
      row.enumerated().map { i, cell in
        let padding = String(repeating: " ", count: widths[i] - cell.count)
        if rightAligned.contains(i) { return padding + cell }
        return i == row.count - 1 ? cell : cell + padding
      }.joined(separator: "  ")
    }.joined(separator: "\n")
  }
}
