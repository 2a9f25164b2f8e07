import Synchronization

/// When a run started and finished, as its executor reported them, moved onto the
/// coordinator's clock.
///
/// An executor stamps both times with its own wall clock, which may be off from the
/// coordinator's by up to the skew bound (500 ms by default) and, for an executor already
/// outside it, by any amount. Stored as sent, a run of an executor behind the coordinator could
/// finish before its lease began. The heartbeats measure the executor's offset; subtracting it
/// puts both times on the coordinator's clock to within half a round trip. What cannot be true
/// is then ruled out: a run reported to finish after its result arrived finished when the result
/// arrived, and no run starts before its scheduled time (the executor holds a run leased ahead
/// until it is due) or after it finished.
struct ReportedRunTimes: Equatable {
  /// When the attempt started; nil when the executor did not say.
  var startedMicros: Int64?
  /// When the attempt finished.
  var finishedMicros: Int64
}

extension ReportedRunTimes {
  /// - Parameters:
  ///   - reportedStarted: the start by the executor's clock, if it sent one.
  ///   - reportedFinished: the end by the executor's clock, if it sent one (else: `now`).
  ///   - clockOffsetMicros: the executor's clock minus the coordinator's, as last measured.
  ///   - scheduledMicros: the run's scheduled time.
  ///   - now: the coordinator's clock once the result has arrived.
  init(reportedStarted: Int64?, reportedFinished: Int64?, clockOffsetMicros: Int64, scheduledMicros: Int64, now: Int64) {
    // Times from the wire are clamped to the protobuf range (years 1 to 9999, under 2^58 µs
    // from the epoch either way), and an offset is the difference of two such times less at
    // most half an hour's round trip: no subtraction here can overflow.
    let finished = reportedFinished.map { min(now, $0 - clockOffsetMicros) } ?? now
    finishedMicros = finished
    startedMicros = reportedStarted.map { min(max(scheduledMicros, $0 - clockOffsetMicros), finished) }
  }
}

/// The clock offset of one executor's stream (its clock minus the coordinator's), measured at
/// each heartbeat and read for each result; zero until the first heartbeat.
final class ExecutorClockOffset: Sendable {
  private let micros = Atomic<Int64>(0)

  /// The latest measurement.
  var currentMicros: Int64 { micros.load(ordering: .relaxed) }

  /// Records a measurement.
  func measured(_ offsetMicros: Int64) { micros.store(offsetMicros, ordering: .relaxed) }
}
