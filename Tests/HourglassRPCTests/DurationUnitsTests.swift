import Testing

@testable import HourglassRPC

@Suite("Timeouts in wire units: saturating, never trapping")
struct DurationUnitsTests {
  @Test("ordinary durations convert exactly; beyond Int64 they saturate at its ends")
  func saturating() {
    #expect(Duration.milliseconds(1_500).saturatingUnits(of: 1_000_000) == 1_500_000)
    #expect(Duration.nanoseconds(1_234_567_891).saturatingUnits(of: 1_000_000_000) == 1_234_567_891)
    #expect(Duration.seconds(-2).saturatingUnits(of: 1_000_000) == -2_000_000)
    #expect(Duration.seconds(Int64.max).saturatingUnits(of: 1_000_000) == .max)
    #expect(Duration.seconds(Int64.min).saturatingUnits(of: 1_000_000_000) == .min)
    #expect(Duration.seconds(Int64.max / 1_000_000_000).saturatingUnits(of: 1_000_000_000) <= .max)
    #expect((Duration.seconds(Int64.max / 1_000_000) + .milliseconds(999)).saturatingUnits(of: 1_000_000) == .max)
  }
}
