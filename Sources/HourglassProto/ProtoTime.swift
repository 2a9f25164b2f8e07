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

  /// Microseconds since the epoch; sub-microsecond digits are dropped.
  public static func micros(_ timestamp: Google_Protobuf_Timestamp) -> Int64 {
    timestamp.seconds * 1_000_000 + Int64(timestamp.nanos) / 1000
  }

  /// A duration of `micros` microseconds.
  public static func duration(_ micros: Int64) -> Google_Protobuf_Duration {
    var value = Google_Protobuf_Duration()
    value.seconds = micros / 1_000_000
    value.nanos = Int32((micros % 1_000_000) * 1000)
    return value
  }

  /// A duration in microseconds; sub-microsecond digits are dropped.
  public static func micros(_ duration: Google_Protobuf_Duration) -> Int64 {
    duration.seconds * 1_000_000 + Int64(duration.nanos) / 1000
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
