import Foundation
import SwiftProtobuf

/// Conversions between microseconds since the Unix epoch (the unit Hourglass computes in) and
/// the protobuf well-known `Timestamp` and `Duration`.
public enum ProtoTime {
  /// A timestamp for `micros` microseconds since the epoch (floor division for times before it).
  public static func timestamp(_ micros: Int64) -> Google_Protobuf_Timestamp {
    var value = Google_Protobuf_Timestamp()
    value.seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
    value.nanos = Int32((micros - value.seconds * 1_000_000) * 1000)
    return value
  }

  /// The seconds a `Timestamp` may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
  public static let timestampSeconds: ClosedRange<Int64> = -62_135_596_800...253_402_300_799
  /// The seconds a `Duration` may hold: about ±10,000 years.
  public static let durationSeconds: ClosedRange<Int64> = -315_576_000_000...315_576_000_000

  /// Microseconds since the epoch; sub-microsecond digits are dropped. Never traps: a
  /// timestamp outside the type's range (years 1–9999) is clamped to it first, so a peer's
  /// nonsense cannot overflow; check input with ``checkedMicros(_:)-(Google_Protobuf_Timestamp)``.
  public static func micros(_ timestamp: Google_Protobuf_Timestamp) -> Int64 {
    timestamp.seconds.clamped(to: timestampSeconds) * 1_000_000 + Int64(timestamp.nanos) / 1000
  }

  /// Microseconds since the epoch, or nil when the timestamp is not a valid one (seconds
  /// outside years 1–9999, or nanos outside 0..<1,000,000,000).
  public static func checkedMicros(_ timestamp: Google_Protobuf_Timestamp) -> Int64? {
    guard timestampSeconds.contains(timestamp.seconds), (0..<1_000_000_000).contains(timestamp.nanos) else { return nil }
    return micros(timestamp)
  }

  /// A duration of `micros` microseconds.
  public static func duration(_ micros: Int64) -> Google_Protobuf_Duration {
    var value = Google_Protobuf_Duration()
    value.seconds = micros / 1_000_000
    value.nanos = Int32((micros % 1_000_000) * 1000)
    return value
  }

  /// A duration in microseconds; sub-microsecond digits are dropped. Never traps: seconds
  /// outside the type's range (±10,000 years) are clamped to it first; check input with
  /// ``checkedMicros(_:)-(Google_Protobuf_Duration)``.
  public static func micros(_ duration: Google_Protobuf_Duration) -> Int64 {
    duration.seconds.clamped(to: durationSeconds) * 1_000_000 + Int64(duration.nanos) / 1000
  }

  /// A duration in microseconds, or nil when it is not a valid one (seconds beyond ±10,000
  /// years, nanos beyond ±999,999,999 or of the other sign).
  public static func checkedMicros(_ duration: Google_Protobuf_Duration) -> Int64? {
    guard durationSeconds.contains(duration.seconds), (-999_999_999...999_999_999).contains(duration.nanos),
      duration.seconds == 0 || duration.nanos == 0 || (duration.seconds < 0) == (duration.nanos < 0)
    else { return nil }
    return micros(duration)
  }

  /// Microseconds since the epoch of a `Date`, to the nearest microsecond (so that a date made
  /// from a microsecond count gives that count back).
  public static func micros(_ date: Date) -> Int64 {
    Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
  }

  /// A timestamp for a `Date`, to the microsecond.
  public static func timestamp(_ date: Date) -> Google_Protobuf_Timestamp {
    timestamp(micros(date))
  }

  /// The `Date` of a timestamp.
  public static func date(_ timestamp: Google_Protobuf_Timestamp) -> Date {
    Date(timeIntervalSince1970: Double(micros(timestamp)) / 1_000_000)
  }

  /// A protobuf duration for a Swift `Duration`, to the microsecond.
  public static func duration(_ duration: Swift.Duration) -> Google_Protobuf_Duration {
    self.duration(micros(duration))
  }

  /// A Swift `Duration` for a protobuf duration.
  public static func swiftDuration(_ duration: Google_Protobuf_Duration) -> Swift.Duration {
    .microseconds(micros(duration))
  }

  /// Microseconds in a Swift `Duration` (truncated).
  public static func micros(_ duration: Swift.Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
  }
}

extension Comparable {
  fileprivate func clamped(to range: ClosedRange<Self>) -> Self {
    min(max(self, range.lowerBound), range.upperBound)
  }
}
