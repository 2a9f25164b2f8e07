import Foundation

/// The identity of a task: a UUIDv7, so ids sort by creation time (48-bit Unix milliseconds in
/// the leading bytes) and inserts land at the end of an index instead of all over it.
///
/// The string form is the canonical lowercase UUID; ordering is by the 16 bytes, which is the
/// same order a database gives a 16-byte blob or a PostgreSQL `uuid`.
public struct TaskID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
  /// The underlying UUID.
  public let uuid: UUID

  /// Wraps an existing UUID (any version; ids minted here are always version 7).
  public init(uuid: UUID) {
    self.uuid = uuid
  }

  /// Mints a version-7 id for the instant `unixMilliseconds`, with 74 random bits from `generator`.
  public init<G: RandomNumberGenerator>(unixMilliseconds: Int64, using generator: inout G) {
    let ms = UInt64(max(0, min(unixMilliseconds, 0xFFFF_FFFF_FFFF)))
    let a = generator.next() as UInt64
    let b = generator.next() as UInt64
    // Built in place: this runs once per scheduled task, so no intermediate arrays.
    func byte(_ value: UInt64, _ shift: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: value >> shift) }
    self.uuid = UUID(
      uuid: (
        byte(ms, 40), byte(ms, 32), byte(ms, 24), byte(ms, 16), byte(ms, 8), byte(ms, 0),
        0x70 | UInt8(truncatingIfNeeded: a & 0x0F), byte(a, 8),
        0x80 | UInt8(truncatingIfNeeded: (a >> 16) & 0x3F), byte(b, 0),
        byte(b, 8), byte(b, 16), byte(b, 24), byte(b, 32), byte(b, 40), byte(b, 48)
      ))
  }

  /// Mints a version-7 id for the instant `unixMilliseconds` with the system's random numbers
  /// (``PooledSystemRandomNumberGenerator``).
  public init(unixMilliseconds: Int64) {
    var rng = PooledSystemRandomNumberGenerator()
    self.init(unixMilliseconds: unixMilliseconds, using: &rng)
  }

  /// Mints a version-7 id for the current wall-clock time.
  public static func now() -> TaskID {
    TaskID(unixMilliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))
  }

  /// Builds an id from exactly 16 bytes; nil for any other length.
  public init?(bytes: some Collection<UInt8>) {
    guard bytes.count == 16 else { return nil }
    let b = Array(bytes)
    self.uuid = UUID(
      uuid: (
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
      ))
  }

  /// Parses the canonical (case-insensitive) UUID text form.
  public init?(_ string: String) {
    guard let uuid = UUID(uuidString: string) else { return nil }
    self.uuid = uuid
  }

  /// The 16 bytes of the UUID, most significant first.
  public var bytes: [UInt8] {
    withUnsafeBytes(of: uuid.uuid) { Array($0) }
  }

  /// The creation instant carried in a version-7 id, in Unix milliseconds.
  public var unixMilliseconds: Int64 {
    withUnsafeBytes(of: uuid.uuid) { b in
      var ms: Int64 = 0
      for i in 0..<6 { ms = ms << 8 | Int64(b[i]) }
      return ms
    }
  }

  /// The UUID version nibble (7 for ids minted by this type).
  public var version: Int { Int(uuid.uuid.6 >> 4) }

  /// The canonical lowercase UUID text, `8-4-4-4-12` hex digits. Written directly rather than
  /// through Foundation's `uuidString` (which formats with `sprintf` on Linux) and a
  /// `lowercased()` copy: every Schedule answer and every log line with a task id builds one.
  public var description: String {
    withUnsafeBytes(of: uuid.uuid) { raw in
      String(unsafeUninitializedCapacity: 36) { text in
        let digits: StaticString = "0123456789abcdef"
        var at = 0
        for index in 0..<16 {
          if index == 4 || index == 6 || index == 8 || index == 10 {
            text[at] = UInt8(ascii: "-")
            at += 1
          }
          let byte = raw[index]
          text[at] = digits.utf8Start[Int(byte >> 4)]
          text[at + 1] = digits.utf8Start[Int(byte & 0x0F)]
          at += 2
        }
        return at
      }
    }
  }

  /// Byte order, without copying the bytes out.
  public static func < (lhs: TaskID, rhs: TaskID) -> Bool {
    withUnsafeBytes(of: lhs.uuid.uuid) { l in
      withUnsafeBytes(of: rhs.uuid.uuid) { r in
        for index in 0..<16 where l[index] != r[index] { return l[index] < r[index] }
        return false
      }
    }
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    let text = try container.decode(String.self)
    guard let id = TaskID(text) else {
      throw DecodingError.dataCorruptedError(
        in: container, debugDescription: "not a UUID: \(text)")
    }
    self = id
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}
