/// Writes compact JSON straight into bytes: the fast writer behind the stored schedule format.
///
/// The caller writes members in the order it wants them (the stored formats write sorted keys,
/// as `JSONEncoder` with `.sortedKeys` does, so both produce the same bytes for the same value);
/// the writer adds commas, quotes and escapes. `/` is not escaped.
public struct JSONBytesWriter: Sendable {
  /// The document so far.
  public private(set) var bytes: [UInt8] = []
  /// Whether the next member is the first of its object (so no comma goes before it).
  private var first = true

  /// An empty writer.
  public init() { bytes.reserveCapacity(256) }

  /// Writes an object whose members `body` writes with the `member` methods.
  public mutating func object(_ body: (inout JSONBytesWriter) -> Void) {
    bytes.append(UInt8(ascii: "{"))
    first = true
    body(&self)
    bytes.append(UInt8(ascii: "}"))
    first = false
  }

  /// Writes the name of the next member; its value is written next.
  public mutating func key(_ name: String) {
    if !first { bytes.append(UInt8(ascii: ",")) }
    writeString(name)
    bytes.append(UInt8(ascii: ":"))
  }

  /// A member whose value is a string.
  public mutating func member(_ name: String, _ value: String) {
    key(name)
    string(value)
  }

  /// A member whose value is a string or `null`.
  public mutating func member(_ name: String, _ value: String?) {
    key(name)
    if let value { string(value) } else { null() }
  }

  /// A member whose value is an integer or `null`.
  public mutating func member(_ name: String, _ value: Int?) {
    key(name)
    if let value { integer(value) } else { null() }
  }

  /// A member whose value is an instant in RFC 3339 UTC (`2026-03-08T07:00:00Z`, as
  /// ``RFC3339/formatUTC(micros:)`` writes it), or `null`.
  public mutating func member(_ name: String, utcMicros: Int64?) {
    key(name)
    guard let utcMicros else {
      null()
      return
    }
    // Digits and `-:.TZ` only: nothing to escape.
    bytes.append(UInt8(ascii: "\""))
    RFC3339.append(micros: utcMicros, offsetSeconds: 0, useZ: true, to: &bytes)
    bytes.append(UInt8(ascii: "\""))
    first = false
  }

  /// A member whose value is a duration as ``DurationText/format(_:)`` writes it (`1h30m`).
  public mutating func member(_ name: String, durationMicros: Int64) {
    key(name)
    // Digits, `-` and unit letters only: nothing to escape.
    bytes.append(UInt8(ascii: "\""))
    DurationText.append(durationMicros, to: &bytes)
    bytes.append(UInt8(ascii: "\""))
    first = false
  }

  /// A member whose value is a number.
  public mutating func member(_ name: String, _ value: Double) {
    key(name)
    double(value)
  }

  /// A member whose value `body` writes (exactly one value, e.g. through ``object(_:)`` or a
  /// type's own `writeJSON(to:)`).
  public mutating func member(_ name: String, value body: (inout JSONBytesWriter) -> Void) {
    key(name)
    body(&self)
  }

  /// An array of strings.
  public mutating func array(of values: [String]) {
    bytes.append(UInt8(ascii: "["))
    for (index, value) in values.enumerated() {
      if index > 0 { bytes.append(UInt8(ascii: ",")) }
      writeString(value)
    }
    bytes.append(UInt8(ascii: "]"))
    first = false
  }

  /// A string value.
  public mutating func string(_ value: String) {
    writeString(value)
    first = false
  }

  /// An integer value.
  public mutating func integer(_ value: Int) {
    if value < 0 { bytes.append(UInt8(ascii: "-")) }
    DecimalDigits.append(UInt64(value.magnitude), to: &bytes)
    first = false
  }

  /// A number value: integral values within ±2⁵³ without a fraction (`2`, as `JSONEncoder` writes
  /// them), others in Swift's shortest round-tripping form. Not-finite values are written as
  /// `null` (JSON has no NaN or infinity).
  public mutating func double(_ value: Double) {
    if !value.isFinite {
      null()
      return
    }
    if value == value.rounded(), abs(value) <= 9_007_199_254_740_992 {
      bytes.append(contentsOf: String(Int64(value)).utf8)
    } else {
      bytes.append(contentsOf: value.description.utf8)
    }
    first = false
  }

  /// `null`.
  public mutating func null() {
    bytes.append(contentsOf: "null".utf8)
    first = false
  }

  private mutating func writeString(_ value: String) {
    bytes.append(UInt8(ascii: "\""))
    // Most strings (keys, times, durations, zone names) need no escape: copy them whole, scanning
    // the contiguous UTF-8 in a plain loop (a generic `contains(where:)` stood out in profiles of the Schedule path).
    var text = value
    let clean = text.withUTF8 { utf8 -> Bool in
      for byte in utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
        return false
      }
      bytes.append(contentsOf: utf8)
      return true
    }
    if clean {
      bytes.append(UInt8(ascii: "\""))
      return
    }
    for byte in value.utf8 {
      switch byte {
      case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
      case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
      case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
      case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
      case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
      case 0..<0x20:
        let hex = Array("0123456789abcdef".utf8)
        bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
        bytes.append(hex[Int(byte >> 4)])
        bytes.append(hex[Int(byte & 0xF)])
      default: bytes.append(byte)
      }
    }
    bytes.append(UInt8(ascii: "\""))
  }
}
