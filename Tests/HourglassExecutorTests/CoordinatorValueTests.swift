import Foundation
import HourglassProto
import Testing

@testable import HourglassExecutor

/// Values a coordinator sends, at the ends of what the wire can carry: the executor clamps
/// them rather than trap (a deadline past `Int64.max` seconds traps in the clock's sleep; a
/// date past 2^31 years overflows `tm_year`).
@Suite("Executor: a coordinator's extreme times and durations are clamped, never a crash")
struct CoordinatorValueTests {
  @Test("a duration of 2^63 seconds (a heartbeat interval, a lease, a timeout) is clamped to the protobuf range")
  func durationClamped() {
    #expect(Duration(Int64.max, 999_999_999) == .seconds(ProtoTime.durationSeconds.upperBound) + .nanoseconds(999_999_999))
    #expect(Duration(Int64.min, 0) == .seconds(ProtoTime.durationSeconds.lowerBound))
    #expect(Duration(30, 500_000_000) == .milliseconds(30_500))
    // A deadline that far ahead still converts to the clock's instant components.
    let deadline = ContinuousClock.now.advanced(by: Duration(Int64.max, 0))
    #expect(deadline > ContinuousClock.now)
  }

  @Test("a scheduled time of 2^63 seconds is formatted as the last instant of 9999, as is one past 2^31 years")
  func scheduledAtClamped() {
    #expect(RFC3339.format(Date(protoSeconds: Int64.max, nanos: 0)) == "9999-12-31T23:59:59Z")
    #expect(RFC3339.format(Date(protoSeconds: 67_768_036_191_676_799, nanos: 0)) == "9999-12-31T23:59:59Z")
    #expect(RFC3339.format(Date(protoSeconds: Int64.min, nanos: 0)) == "0001-01-01T00:00:00Z")
    #expect(RFC3339.format(Date(timeIntervalSince1970: 1e300)).hasPrefix("9999-12-31T23:59:59"))
    #expect(RFC3339.format(Date(protoSeconds: 1_767_225_600, nanos: 250_000_000)) == "2026-01-01T00:00:00.250000Z")
  }
}
