import CoreMetrics
import Foundation
import HourglassCore
import HourglassProto
import HourglassStore
import HourglassStoreSQLite
import Logging
import Synchronization
import Testing

@testable import HourglassCoordinator

@Suite("Dispatcher: grants written beside the dispatch loop", .timeLimit(.minutes(3)))
struct GrantWritingTests {
  /// A dispatcher on a fresh SQLite store (watched) with `noop` runs due at `dueOffsets` from
  /// now (by default 1 s and 2 s), on a manual clock.
  struct Setup {
    let directory: URL
    let base: SQLiteTaskStore
    let store: ObservedStore
    let clock: ManualClock
    let dispatcher: Dispatcher
    let tasks: [NewTask]
    let dues: [Int64]

    init(dueOffsets: [Int64] = [1_000_000, 2_000_000], configuration: CoordinatorConfiguration = .defaults) async throws {
      directory = FileManager.default.temporaryDirectory.appendingPathComponent("hourglass-grants-\(UUID().uuidString)")
      try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
      var storeConfiguration = SQLiteTaskStore.Configuration.defaults(path: directory.appendingPathComponent("tasks.db").path)
      storeConfiguration.partitionCount = 4
      base = try await SQLiteTaskStore(configuration: storeConfiguration)
      clock = ManualClock(nowMicros: Harness.start)
      store = ObservedStore(base, clock: clock)
      dispatcher = Dispatcher(
        store: store, clock: clock, configuration: configuration, logger: Logger(label: "test.grants"),
        metrics: CoordinatorMetrics(factory: NOOPMetricsHandler.instance))
      let dues = dueOffsets.map { Harness.start + $0 }
      self.dues = dues
      tasks = dues.map { Self.noopTask(due: $0) }
      _ = try await store.insert(tasks)
    }

    /// Connects an executor writing to `stream`, with its clock measured and `credits` granted.
    func connect(_ name: String, slots: Int, credits: Int, to stream: SlowStream) async -> UInt64 {
      let session = await dispatcher.addExecutor(executorID: name, operators: ["noop"], slots: slots, batches: true) {
        try await stream.write($0)
      }
      // Its clock measured inside the bound, as its first heartbeat would.
      _ = await dispatcher.heartbeat(session: session, skewMicros: 0)
      await dispatcher.grant(session: session, credits: credits)
      return session
    }

    func runID(_ index: Int) -> RunID { RunID(taskID: tasks[index].id, scheduledMicros: dues[index]) }

    /// A one-shot `noop` task of alice's, due at `due`.
    static func noopTask(due: Int64, maxAttempts: Int32 = 1, createdAt: Int64 = Harness.start) -> NewTask {
      NewTask(
        id: TaskID.now(), owner: "alice", operatorName: "noop",
        scheduleSpec: StoredTaskSpec(schedule: .once(at: due), retry: .defaults).encoded(), maxAttempts: maxAttempts, firstRunMicros: due,
        createdAtMicros: createdAt)
    }

    /// Stops the dispatcher `running`, then closes the store.
    func stop(_ running: Task<Void, any Error>) async throws {
      running.cancel()
      _ = await running.result
      try await close()
    }

    func close() async throws {
      try await base.close()
      try? FileManager.default.removeItem(at: directory)
    }
  }

  @Test("the next lease transaction does not wait for the last one's grants to be written; a cancel follows its run's grant")
  func leasingGoesOnWhileAStreamIsSlow() async throws {
    let setup = try await Setup()
    let (clock, store, dispatcher, tasks, dues) = (setup.clock, setup.store, setup.dispatcher, setup.tasks, setup.dues)

    let stream = SlowStream()
    let running = Task { try await dispatcher.run() }
    _ = await setup.connect("exec-1", slots: 2, credits: 2, to: stream)

    // The first run's grant is being written, and the stream does not take it yet.
    clock.advance(byMicros: 1_000_000)
    await stream.waitUntilWriting()
    // The second run is leased all the same (the dispatch loop used to wait for that write).
    clock.advance(byMicros: 1_000_000)
    await store.waitForLeaseTransactions(2)
    // The store has leased it; the cancel needs the dispatcher to hold the lease too (it did not
    // always yet on a loaded machine, and the cancel then found nothing to cancel).
    await dispatcher.waitUntilDispatched(2)
    let second = RunID(taskID: tasks[1].id, scheduledMicros: dues[1])
    await dispatcher.cancel(second, reason: "test")

    // Once the stream takes messages again: both grants, in lease order, then the cancel.
    stream.open()
    let written = await stream.waitForMessages(3)
    try #require(written.count == 3)
    #expect(written.prefix(2).map(\.lease.runID) == dues.indices.map { RunID(taskID: tasks[$0].id, scheduledMicros: dues[$0]).description })
    #expect(written[2].cancel.runID == second.description)
    running.cancel()
    _ = await running.result
    try await setup.close()
  }

  @Test("an executor whose stream takes no messages holds up only its own grants: another's go out meanwhile")
  func stalledStreamHoldsOnlyItsOwn() async throws {
    let setup = try await Setup()
    let stalled = SlowStream()
    let healthy = SlowStream(open: true)
    let running = Task { try await setup.dispatcher.run() }
    _ = await setup.connect("exec-stalled", slots: 1, credits: 1, to: stalled)
    // The first run's grant goes to the only executor, whose stream takes nothing.
    setup.clock.advance(byMicros: 1_000_000)
    await stalled.waitUntilWriting()
    _ = await setup.connect("exec-healthy", slots: 1, credits: 1, to: healthy)
    // The second run's grant, to the other executor, is written while the first still waits.
    setup.clock.advance(byMicros: 1_000_000)
    let written = await bounded("the healthy executor's grant") { await healthy.waitForMessages(1) }
    #expect(written?.first?.lease.runID == setup.runID(1).description)
    stalled.open()
    #expect(await stalled.waitForMessages(1).first?.lease.runID == setup.runID(0).description)
    running.cancel()
    _ = await running.result
    try await setup.close()
  }
}

/// An executor's stream that holds every write until ``open()``, and keeps what was written.
final class SlowStream: Sendable {
  private struct State {
    var open = false
    var held: [CheckedContinuation<Void, Never>] = []
    var writing: [CheckedContinuation<Void, Never>] = []
    var written: [Hourglass_V1_CoordinatorMessage] = []
    var readers: [(count: Int, continuation: CheckedContinuation<[Hourglass_V1_CoordinatorMessage], Never>)] = []
  }

  private let state: Mutex<State>

  /// A stream that holds writes until ``open()`` (or, `open`, one that never holds them).
  init(open: Bool = false) {
    var state = State()
    state.open = open
    self.state = Mutex(state)
  }

  func write(_ message: Hourglass_V1_CoordinatorMessage) async throws {
    // Cancelled (the test's time limit): everything goes through, so the test ends and fails.
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let (go, writing) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
          defer { state.writing.removeAll() }
          if state.open || Task.isCancelled { return (true, state.writing) }
          state.held.append(continuation)
          return (false, state.writing)
        }
        for waiter in writing { waiter.resume() }
        if go { continuation.resume() }
      }
    } onCancel: {
      open()
    }
    let ready = state.withLock { state -> [(CheckedContinuation<[Hourglass_V1_CoordinatorMessage], Never>, [Hourglass_V1_CoordinatorMessage])] in
      state.written.append(message)
      let count = state.written.count
      let ready = state.readers.filter { $0.count <= count }.map { ($0.continuation, state.written) }
      state.readers.removeAll { $0.count <= count }
      return ready
    }
    for (reader, written) in ready { reader.resume(returning: written) }
  }

  /// Returns once a write is waiting (or the stream is open).
  func waitUntilWriting() async {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let now = state.withLock { state -> Bool in
          if !state.held.isEmpty || state.open || Task.isCancelled { return true }
          state.writing.append(continuation)
          return false
        }
        if now { continuation.resume() }
      }
    } onCancel: {
      open()
    }
  }

  /// Lets every held write, and every later one, through.
  func open() {
    let (held, writing) = state.withLock { state -> ([CheckedContinuation<Void, Never>], [CheckedContinuation<Void, Never>]) in
      state.open = true
      defer {
        state.held.removeAll()
        state.writing.removeAll()
      }
      return (state.held, state.writing)
    }
    for waiter in held + writing { waiter.resume() }
  }

  /// The messages written, once there are at least `count` (or what there is, if cancelled).
  func waitForMessages(_ count: Int) async -> [Hourglass_V1_CoordinatorMessage] {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<[Hourglass_V1_CoordinatorMessage], Never>) in
        let now = state.withLock { state -> [Hourglass_V1_CoordinatorMessage]? in
          if state.written.count >= count || Task.isCancelled { return state.written }
          state.readers.append((count, continuation))
          return nil
        }
        if let now { continuation.resume(returning: now) }
      }
    } onCancel: {
      let readers = state.withLock { state in
        defer { state.readers.removeAll() }
        return state.readers.map { ($0.continuation, state.written) }
      }
      for (reader, written) in readers { reader.resume(returning: written) }
    }
  }
}
