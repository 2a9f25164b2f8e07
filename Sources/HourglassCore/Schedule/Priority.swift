/// A task's priority: a small integer, higher first when several runs are due at the same time.
///
/// Ranges from -100 to 100, default 0. Priority orders runs that are due together; it never lets a
/// later run overtake an earlier due one.
public struct Priority: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
  /// The lowest priority, -100.
  public static let minimum = Priority(uncheckedValue: -100)
  /// The highest priority, 100.
  public static let maximum = Priority(uncheckedValue: 100)
  /// The default, 0.
  public static let defaults = Priority(uncheckedValue: 0)

  /// The value, -100…100.
  public let value: Int

  /// Creates a priority, refusing values outside -100…100.
  public init(_ value: Int) throws(ScheduleValidationError) {
    guard (-100...100).contains(value) else {
      throw ScheduleValidationError(field: "priority", reason: "\(value) out of range -100-100")
    }
    self.value = value
  }

  private init(uncheckedValue: Int) { value = uncheckedValue }

  public static func < (lhs: Priority, rhs: Priority) -> Bool { lhs.value < rhs.value }

  /// The number.
  public var description: String { String(value) }

  /// Encodes as a bare JSON number.
  public func encode(to encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    try c.encode(value)
  }

  /// Decodes a bare JSON number, validating its range.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.singleValueContainer()
    let raw = try c.decode(Int.self)
    do {
      try self.init(raw)
    } catch {
      throw DecodingError.dataCorruptedError(in: c, debugDescription: error.description)
    }
  }
}
