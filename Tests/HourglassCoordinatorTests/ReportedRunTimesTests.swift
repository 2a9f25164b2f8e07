import HourglassProto
import SwiftProtobuf
import Testing

@testable import HourglassCoordinator

@Suite("Reported run times: an executor's clock moved onto the coordinator's")
struct ReportedRunTimesTests {
  static let due: Int64 = 1_767_225_600_000_000
  static let now = due + 5_000_000

  @Test("the measured offset is taken off both times")
  func offsetRemoved() {
    let ahead: Int64 = 300_000
    let times = ReportedRunTimes(
      reportedStarted: Self.due + 100_000 + ahead, reportedFinished: Self.due + 1_500_000 + ahead, clockOffsetMicros: ahead,
      scheduledMicros: Self.due, now: Self.now)
    #expect(times == ReportedRunTimes(startedMicros: Self.due + 100_000, finishedMicros: Self.due + 1_500_000))
    let behind = ReportedRunTimes(
      reportedStarted: Self.due + 100_000 - 400_000, reportedFinished: Self.due + 200_000 - 400_000, clockOffsetMicros: -400_000,
      scheduledMicros: Self.due, now: Self.now)
    #expect(behind == ReportedRunTimes(startedMicros: Self.due + 100_000, finishedMicros: Self.due + 200_000))
  }

  @Test("a run never finishes after its result arrived, nor starts before it was due or after it finished")
  func impossibleTimesRuledOut() {
    // An executor far ahead, not measured yet (offset 0).
    let future = ReportedRunTimes(
      reportedStarted: Self.now + 60_000_000, reportedFinished: Self.now + 61_000_000, clockOffsetMicros: 0, scheduledMicros: Self.due,
      now: Self.now)
    #expect(future == ReportedRunTimes(startedMicros: Self.now, finishedMicros: Self.now))
    // An executor far behind: its start would be before the run was due.
    let past = ReportedRunTimes(
      reportedStarted: Self.due - 60_000_000, reportedFinished: Self.due + 1_000_000, clockOffsetMicros: 0, scheduledMicros: Self.due,
      now: Self.now)
    #expect(past == ReportedRunTimes(startedMicros: Self.due, finishedMicros: Self.due + 1_000_000))
  }

  @Test("without reported times: finished when the result arrived, the start left to the lease")
  func nothingReported() {
    let times = ReportedRunTimes(reportedStarted: nil, reportedFinished: nil, clockOffsetMicros: 250_000, scheduledMicros: Self.due, now: Self.now)
    #expect(times == ReportedRunTimes(startedMicros: nil, finishedMicros: Self.now))
  }

  @Test("times near the ends of the protobuf range do not overflow")
  func extremes() {
    let lowest = ProtoTime.micros(Google_Protobuf_Timestamp(seconds: -62_135_596_800, nanos: 0))
    let highest = ProtoTime.micros(Google_Protobuf_Timestamp(seconds: 253_402_300_799, nanos: 999_999_999))
    let times = ReportedRunTimes(
      reportedStarted: lowest, reportedFinished: highest, clockOffsetMicros: lowest - highest, scheduledMicros: Self.due, now: Self.now)
    #expect(times.finishedMicros == Self.now)
    #expect(times.startedMicros == Self.now)
  }

  @Test("a heartbeat's round trip is taken off by half; a nonsense one (2^64 - 1 µs) is bounded, not a crash")
  func roundTripBounded() async throws {
    try await Harness.with { harness in
      let executor = try await harness.executor("exec-1")
      let now = harness.clock.nowMicros()
      // Stamped with the coordinator's present, after a 20 ms round trip: it was sent about
      // 10 ms ago, so the executor's clock is 10 ms ahead.
      #expect(try await executor.heartbeat(executorTimeMicros: now, roundTripMicros: 20_000).measuredSkewMicros == 10_000)
      let bounded = try await executor.heartbeat(executorTimeMicros: now, sequence: 2, roundTripMicros: .max)
      #expect(bounded.measuredSkewMicros == Int64(ExecutorService.longestRoundTripMicros / 2))
      #expect(!bounded.eligible)
      await executor.close()
    }
  }

  @Test("over the executor stream: a run's history shows its start and end on the coordinator's clock")
  func overTheStream() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await alice.schedule(once: 10)
      let executor = try await harness.executor("exec-1")
      // This executor's clock is 300 ms ahead of the coordinator's.
      let ahead: Int64 = 300_000
      let ack = try await executor.heartbeat(executorTimeMicros: harness.clock.nowMicros() + ahead)
      #expect(ack.measuredSkewMicros == ahead)
      #expect(ack.eligible)
      executor.grant(1)
      harness.advance(seconds: 10)
      let lease = try await executor.nextLease()
      harness.advance(seconds: 2)
      let due = Harness.start + 10_000_000
      // By its own clock: started 100 ms after the due time, finished 1.5 s after.
      #expect(try await executor.report(lease, outcome: .succeeded, started: due + 100_000 + ahead, finished: due + 1_500_000 + ahead))
      let run = try #require(try await alice.runs(id).first)
      #expect(ProtoTime.micros(run.started) == due + 100_000)
      #expect(ProtoTime.micros(run.finished) == due + 1_500_000)
      await executor.close()
    }
  }

  @Test("a run's error text is stored up to 4 KiB, cut at a character boundary")
  func storedErrorCut() {
    #expect(ExecutorService.storedError("exit 1") == "exit 1")
    let ascii = ExecutorService.storedError(String(repeating: "x", count: 10_000))
    #expect(ascii.utf8.count == ExecutorService.storedErrorBytes)
    #expect(ascii.hasSuffix("…"))
    let accented = ExecutorService.storedError(String(repeating: "é", count: 3_000))
    #expect(accented.utf8.count <= ExecutorService.storedErrorBytes)
    #expect(accented == String(repeating: "é", count: 2_046) + "…")
    // PostgreSQL's text refuses NUL (and would fail the whole batch of results with it).
    #expect(ExecutorService.storedError("bad\u{0}byte") == "bad\u{FFFD}byte")
  }
}
