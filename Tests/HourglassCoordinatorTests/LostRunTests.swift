import HourglassCore
import HourglassStore
import Testing

@testable import HourglassCoordinator

/// A due run must never be left out of the queue for good: not when a read of due entries
/// fails, not when the read after a lease recovery fails, and not for any other reason (the
/// sweep). Each test would wait forever, and fail at its bound, without what it tests.
@Suite("Dispatcher: failed reads lose no run", .timeLimit(.minutes(3)))
struct LostRunTests {
  /// The defaults without the sweep, so that a test shows what finds the run without it.
  static var withoutSweep: CoordinatorConfiguration {
    var configuration = CoordinatorConfiguration.defaults
    configuration.clusterSweepMicros = 3_600_000_000
    return configuration
  }

  /// Runs `setup`'s dispatcher with one executor of one slot; returns once its first sweep
  /// waits (for 5 s after the start), so the clock can then be moved past it.
  static func startWaitingForTheSweep(_ setup: GrantWritingTests.Setup) async -> (stream: SlowStream, running: Task<Void, any Error>) {
    let stream = SlowStream(open: true)
    let firstSweep = setup.clock.expectSleeper(until: Harness.start + 5_000_000)
    let running = Task { try await setup.dispatcher.run() }
    _ = await setup.connect("exec-1", slots: 1, credits: 1, to: stream)
    _ = await bounded("the sweep waiting") { await firstSweep.first { _ in true } }
    return (stream, running)
  }

  @Test("a read of due entries that fails is read again from its start: the run goes out at its due time")
  func failedLoadIsReadAgain() async throws {
    let setup = try await GrantWritingTests.Setup(dueOffsets: [92_000_000], configuration: Self.withoutSweep)
    let (clock, start) = (setup.clock, Harness.start)
    let stream = SlowStream(open: true)
    // The first window read, the loader sleeps until a sixteenth of the window (60 s) has passed.
    let loaded = clock.expectSleeper(until: start + 3_750_000)
    let running = Task { try await setup.dispatcher.run() }
    _ = await setup.connect("exec-1", slots: 1, credits: 1, to: stream)
    _ = await bounded("the first window read") { await loaded.first { _ in true } }
    // From now on reads fail. One at 40 s reads up to 100 s, past the run's due time...
    setup.store.failLoads(true)
    let retrying = clock.expectSleeper(until: start + 41_000_000)
    clock.advance(byMicros: 40_000_000)
    _ = await bounded("a failed read reaching the due time") { await setup.store.waitForFailedLoad(atOrAfter: start + 40_000_000) }
    // ...and the loader tries again a second later, from where the failed read started.
    _ = await bounded("the loader waiting to try again") { await retrying.first { _ in true } }
    setup.store.failLoads(false)
    clock.advance(byMicros: 52_000_000)
    let written = await bounded("the run's grant") { await stream.waitForMessages(1) }
    #expect(written?.first?.lease.runID == setup.runID(0).description)
    try await setup.stop(running)
  }

  @Test("runs recovered from an expired lease are queued even when reading their tasks then fails")
  func recoveredRunsAreQueuedWithoutTheirTasks() async throws {
    let configuration = Self.withoutSweep
    let setup = try await GrantWritingTests.Setup(dueOffsets: [], configuration: configuration)
    // A task with attempts left (on its last, an expired lease is recorded dead instead).
    let due = Harness.start + 1_000_000
    let task = GrantWritingTests.Setup.noopTask(due: due, maxAttempts: 3)
    _ = try await setup.store.insert([task])
    let stream = SlowStream(open: true)
    let running = Task { try await setup.dispatcher.run() }
    _ = await setup.connect("exec-1", slots: 2, credits: 2, to: stream)
    setup.clock.advance(byMicros: 1_000_000)
    let first = await bounded("the first grant") { await stream.waitForMessages(1) }
    // The executor goes silent. The recovery commits; the read of the run's task after it fails.
    setup.store.failRecordReads(1)
    setup.clock.advance(byMicros: configuration.leaseDurationMicros + configuration.skewBoundMicros + 1_000_000)
    let written = await bounded("the recovered run's grant") { await stream.waitForMessages(2) }
    let again = try #require(written?.last?.lease)
    #expect(again.runID == RunID(taskID: task.id, scheduledMicros: due).description)
    #expect(again.fence > (first?.first?.lease.fence ?? .max))
    try await setup.stop(running)
  }

  @Test("on one coordinator, a due run missing from the queue goes out at the next sweep")
  func sweepFindsWhatTheQueueLost() async throws {
    let setup = try await GrantWritingTests.Setup(dueOffsets: [100_000_000])
    let (clock, start) = (setup.clock, Harness.start)
    let (stream, running) = await Self.startWaitingForTheSweep(setup)
    // The loader queues the run (and reads its task ahead of its due time)...
    let secondSweep = clock.expectSleeper(until: start + 55_000_000)
    clock.advance(byMicros: 50_000_000)
    _ = await bounded("the run loaded") { await setup.store.waitForRecordRead(of: setup.tasks[0].id) }
    // ...and the queue loses it, the store still holding it due: only a sweep finds it now.
    await setup.dispatcher.forget(taskID: setup.tasks[0].id, cancelling: [], reason: "lost by the test")
    _ = await bounded("the sweep waiting again") { await secondSweep.first { _ in true } }
    // The sweep leaves the last second to the dispatch loop: the one at 106 s reads 95.5–105 s.
    clock.advance(byMicros: 56_000_000)
    let written = await bounded("the run's grant") { await stream.waitForMessages(1) }
    #expect(written?.first?.lease.runID == setup.runID(0).description)
    try await setup.stop(running)
  }

  @Test("a sweep reads at most its limit, and the next goes on from there: a backlog larger than the limit is read in turns, not whole each time")
  func sweepsTakeTurnsThroughALargeBacklog() async throws {
    var configuration = CoordinatorConfiguration.defaults
    // An interval no other loop of the dispatcher sleeps by, so each sweep's sleep is its own.
    configuration.clusterSweepMicros = 5_000_003
    configuration.sweepLimit = 2
    let interval = configuration.clusterSweepMicros
    let setup = try await GrantWritingTests.Setup(dueOffsets: [], configuration: configuration)
    let (clock, start) = (setup.clock, Harness.start)
    let firstSweep = clock.expectSleeper(until: start + interval)
    // No executor: what is queued stays queued.
    let running = Task { try await setup.dispatcher.run() }
    _ = await bounded("the first sweep waiting") { await firstSweep.first { _ in true } }
    // Five overdue runs over three hours, written behind the dispatcher's back (lost notices):
    // only sweeps find them.
    let dues = [start - 10_800_000_000, start - 7_200_000_000, start - 7_199_000_000, start - 3_600_000_000, start - 10_000_000]
    _ = try await setup.base.insert(dues.map { GrantWritingTests.Setup.noopTask(due: $0) })
    var queuedAfterEachSweep: [Int] = []
    for round in 1...4 {
      let sleeping = clock.expectSleeper(until: start + Int64(round + 1) * interval)
      clock.advance(byMicros: interval)
      _ = await bounded("sweep \(round) ending") { await sleeping.first { _ in true } }
      queuedAfterEachSweep.append(await setup.dispatcher.queuedCount)
    }
    // Two more each time, in due order, until the last; the fourth starts over and finds
    // nothing new.
    #expect(queuedAfterEachSweep == [2, 4, 5, 5])
    #expect(await setup.dispatcher.sweepsDone == 4)
    try await setup.stop(running)
  }

  @Test("a run already long overdue when it reaches the store behind the dispatcher's back (a lost notice) goes out at the next sweep")
  func sweepFindsOverdueRuns() async throws {
    let setup = try await GrantWritingTests.Setup(dueOffsets: [])
    let (clock, start) = (setup.clock, Harness.start)
    let (stream, running) = await Self.startWaitingForTheSweep(setup)
    let nextSweep = clock.expectSleeper(until: start + 55_000_000)
    clock.advance(byMicros: 50_000_000)
    _ = await bounded("the sweep waiting again") { await nextSweep.first { _ in true } }
    // Due 30 s ago, and written by someone else (another coordinator, whose notice was lost).
    let due = start + 20_000_000
    let task = GrantWritingTests.Setup.noopTask(due: due, createdAt: start + 50_000_000)
    _ = try await setup.base.insert([task])
    clock.advance(byMicros: 6_000_000)
    let written = await bounded("the run's grant") { await stream.waitForMessages(1) }
    #expect(written?.first?.lease.runID == RunID(taskID: task.id, scheduledMicros: due).description)
    try await setup.stop(running)
  }
}
