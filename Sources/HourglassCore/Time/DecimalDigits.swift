/// Decimal digits appended to a byte buffer, for the text formats written on hot paths (the
/// stored schedule's JSON, RFC 3339 instants, durations) without a `String` per number.
public enum DecimalDigits {
  /// Appends `value` in decimal, left-padded with zeros to at least `width` digits (at most 20,
  /// the digits of the largest `UInt64`).
  public static func append(_ value: UInt64, width: Int = 1, to bytes: inout [UInt8]) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buffer in
      // Least significant first, then copied out in reverse.
      var count = 0
      var rest = value
      repeat {
        buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
        rest /= 10
        count += 1
      } while rest > 0
      while count < min(width, 20) {
        buffer[count] = UInt8(ascii: "0")
        count += 1
      }
      for index in stride(from: count - 1, through: 0, by: -1) { bytes.append(buffer[index]) }
    }
  }
}
