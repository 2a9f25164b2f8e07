import Foundation

extension Date {
  /// The date for an instant in UTC microseconds since the Unix epoch (the scheduler's unit).
  public init(unixMicros: Int64) {
    self.init(timeIntervalSince1970: Double(unixMicros) / 1_000_000)
  }

  /// This date as UTC microseconds since the Unix epoch, rounded down to the microsecond.
  public var unixMicros: Int64 {
    Int64((timeIntervalSince1970 * 1_000_000).rounded(.down))
  }
}
