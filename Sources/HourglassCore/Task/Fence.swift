/// A fencing token: a number that only grows. Every lease carries a fresh one, and the store
/// accepts a renewal or a result only from the holder of the run's current fence, so a paused or
/// partitioned executor whose lease was taken over cannot overwrite its successor's work.
public struct Fence: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
  /// The token value.
  public var rawValue: UInt64

  /// Wraps a token value.
  public init(rawValue: UInt64) {
    self.rawValue = rawValue
  }

  /// The smallest token; no lease ever carries it.
  public static let zero = Fence(rawValue: 0)

  /// The token after this one.
  public var next: Fence { Fence(rawValue: rawValue + 1) }

  /// The token as stores keep it: a signed 64-bit column. Stores issue fences from a signed
  /// counter, so every fence they issued is unchanged; a value from the wire above `Int64.max`
  /// (no store issued it) becomes a negative number that matches no lease, instead of trapping.
  public var storedValue: Int64 { Int64(bitPattern: rawValue) }

  public var description: String { "fence \(rawValue)" }

  public static func < (lhs: Fence, rhs: Fence) -> Bool { lhs.rawValue < rhs.rawValue }

  public init(from decoder: any Decoder) throws {
    self.rawValue = try decoder.singleValueContainer().decode(UInt64.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(rawValue)
  }
}
