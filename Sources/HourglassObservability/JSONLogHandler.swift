import Logging

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A swift-log handler that writes one JSON object per line: `timestamp` (RFC 3339, UTC,
/// microseconds), `level`, `label`, `message`, then the metadata flattened into the same
/// object (a nested dictionary `a: [b: v]` becomes the key `a.b`; arrays stay arrays). Metadata
/// keys are written in sorted order; one that collides with the four fixed keys is written as
/// `metadata.<key>`.
///
/// For log shippers (Loki, Elasticsearch, CloudWatch) that parse a line per event. Bootstrapped
/// only by the executable (`--log-format json`).
public struct JSONLogHandler: LogHandler {
  /// Where finished lines go; each call receives one whole line, newline included.
  public struct Output: Sendable {
    let write: @Sendable (String) -> Void

    /// Sends lines to `write`.
    public init(_ write: @escaping @Sendable (String) -> Void) {
      self.write = write
    }

    /// Standard output, one `write(2)` per line so that lines from several threads never mix.
    public static var standardOutput: Output { Output { line in writeAll(line, to: 1) } }

    /// Standard error, one `write(2)` per line.
    public static var standardError: Output { Output { line in writeAll(line, to: 2) } }
  }

  private static let reserved: Set<String> = ["timestamp", "level", "label", "message"]

  private let label: String
  private let output: Output
  private let nowMicros: @Sendable () -> Int64

  /// The handler's own metadata (`logger[metadataKey:]`).
  public var metadata: Logger.Metadata = [:]
  /// The least severe level written.
  public var logLevel: Logger.Level = .info
  /// Adds contextual metadata to every line.
  public var metadataProvider: Logger.MetadataProvider?

  /// Creates a handler.
  /// - Parameters:
  ///   - label: the logger's label, written as `label`.
  ///   - output: where lines go.
  ///   - metadataProvider: contextual metadata for every line.
  ///   - nowMicros: the wall clock, in microseconds since 1970 (tests fix it).
  public init(
    label: String, output: Output, metadataProvider: Logger.MetadataProvider? = nil,
    nowMicros: @escaping @Sendable () -> Int64 = JSONLogHandler.wallClockMicros
  ) {
    self.label = label
    self.output = output
    self.metadataProvider = metadataProvider
    self.nowMicros = nowMicros
  }

  /// A metadata value.
  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  /// Writes one event as one line.
  public func log(event: LogEvent) {
    var merged = metadata
    if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
    if let own = event.metadata { merged.merge(own) { $1 } }
    var flat: [(String, Logger.Metadata.Value)] = []
    Self.flatten(merged, prefix: "", into: &flat)
    if let error = event.error, !flat.contains(where: { $0.0 == "error" }) {
      flat.append(("error", .string("\(error)")))
    }
    flat.sort { $0.0 < $1.0 }

    var line = "{\"timestamp\":"
    Self.appendString(RFC3339.format(micros: nowMicros()), to: &line)
    line += ",\"level\":"
    Self.appendString(event.level.rawValue, to: &line)
    line += ",\"label\":"
    Self.appendString(label, to: &line)
    line += ",\"message\":"
    Self.appendString(event.message.description, to: &line)
    for (key, value) in flat {
      line += ","
      Self.appendString(Self.reserved.contains(key) ? "metadata.\(key)" : key, to: &line)
      line += ":"
      Self.appendValue(value, to: &line)
    }
    line += "}\n"
    output.write(line)
  }

  /// Microseconds since 1970 from the system's real-time clock.
  @Sendable public static func wallClockMicros() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
  }

  private static func flatten(_ metadata: Logger.Metadata, prefix: String, into flat: inout [(String, Logger.Metadata.Value)]) {
    for (key, value) in metadata {
      let name = prefix.isEmpty ? key : "\(prefix).\(key)"
      if case .dictionary(let nested) = value {
        flatten(nested, prefix: name, into: &flat)
      } else {
        flat.append((name, value))
      }
    }
  }

  private static func appendValue(_ value: Logger.Metadata.Value, to line: inout String) {
    switch value {
    case .string(let text):
      appendString(text, to: &line)
    case .stringConvertible(let convertible):
      appendString(convertible.description, to: &line)
    case .array(let values):
      line += "["
      for (index, element) in values.enumerated() {
        if index > 0 { line += "," }
        appendValue(element, to: &line)
      }
      line += "]"
    case .dictionary(let nested):
      line += "{"
      for (index, key) in nested.keys.sorted().enumerated() {
        if index > 0 { line += "," }
        appendString(key, to: &line)
        line += ":"
        appendValue(nested[key]!, to: &line)
      }
      line += "}"
    }
  }

  /// Appends `text` as a JSON string literal.
  static func appendString(_ text: String, to line: inout String) {
    line += "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": line += "\\\""
      case "\\": line += "\\\\"
      case "\n": line += "\\n"
      case "\r": line += "\\r"
      case "\t": line += "\\t"
      case _ where scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x2028 || scalar.value == 0x2029:
        let hex = String(scalar.value, radix: 16)
        line += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
      default:
        line.unicodeScalars.append(scalar)
      }
    }
    line += "\""
  }
}

private func writeAll(_ line: String, to descriptor: Int32) {
  var line = line
  line.withUTF8 { bytes in
    var offset = 0
    while offset < bytes.count {
      let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
      if written < 0 {
        if errno == EINTR { continue }
        return
      }
      offset += written
    }
  }
}

/// RFC 3339 timestamps in UTC, without Foundation's formatters.
enum RFC3339 {
  /// `2026-12-01T00:00:00.000000Z` for `micros` since 1970.
  static func format(micros: Int64) -> String {
    var seconds = micros / 1_000_000
    var fraction = micros % 1_000_000
    if fraction < 0 {
      fraction += 1_000_000
      seconds -= 1
    }
    var days = seconds / 86_400
    var secondOfDay = seconds % 86_400
    if secondOfDay < 0 {
      secondOfDay += 86_400
      days -= 1
    }
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let mp = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    func pad(_ value: Int64, _ width: Int) -> String {
      let text = String(value)
      return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    return
      "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(fraction, 6))Z"
  }
}
