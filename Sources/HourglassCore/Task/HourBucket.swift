/// The hour a due time falls in: UTC microseconds divided by one hour, rounded towards minus
/// infinity. Together with a ``Partition`` it names a shard, the unit a coordinator loads.
public struct HourBucket: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
  /// Microseconds in one bucket.
  public static let microsPerHour: Int64 = 3_600_000_000

  /// Hours since the Unix epoch.
  public var rawValue: Int64

  /// Wraps a bucket number.
  public init(rawValue: Int64) {
    self.rawValue = rawValue
  }

  /// The bucket holding the instant `micros` (UTC µs).
  public init(containing micros: Int64) {
    let q = micros / Self.microsPerHour
    self.rawValue = (micros % Self.microsPerHour < 0) ? q - 1 : q
  }

  /// The first instant of the bucket (UTC µs, inclusive).
  public var startMicros: Int64 { rawValue * Self.microsPerHour }
  /// The first instant after the bucket (UTC µs, exclusive).
  public var endMicros: Int64 { startMicros + Self.microsPerHour }

  /// The following hour.
  public var next: HourBucket { HourBucket(rawValue: rawValue + 1) }

  public var description: String { "h\(rawValue)" }

  public static func < (lhs: HourBucket, rhs: HourBucket) -> Bool { lhs.rawValue < rhs.rawValue }

  public init(from decoder: any Decoder) throws {
    self.rawValue = try decoder.singleValueContainer().decode(Int64.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(rawValue)
  }
}
