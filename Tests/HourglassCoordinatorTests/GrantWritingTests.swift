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

@Suite("Dispatcher: grants written beside the dispatch loop", .timeLimit(.minutes(1)))
struct GrantWritingTests {
  @Test("the next lease transaction does not wait for the last one's grants to be written; a cancel follows its run's grant")
  func leasingGoesOnWhileAStreamIsSlow() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hourglass-grants-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var storeConfiguration = SQLiteTaskStore.Configuration.defaults(path: directory.appendingPathComponent("tasks.db").path)
    storeConfiguration.partitionCount = 4
    let base = try await SQLiteTaskStore(configuration: storeConfiguration)
    let clock = ManualClock(nowMicros: Harness.start)
    let store = ObservedStore(base, clock: clock)
    let dispatcher = Dispatcher(
      store: store, clock: clock, configuration: .defaults, logger: Logger(label: "test.grants"),
      metrics: CoordinatorMetrics(factory: NOOPMetricsHandler.instance))
    // Two runs, due 1 s and 2 s from now.
    let dues = [Harness.start + 1_000_000, Harness.start + 2_000_000]
    let tasks = dues.map { due in
      NewTask(
        id: TaskID.now(), owner: "alice", operatorName: "noop",
        scheduleSpec: StoredTaskSpec(schedule: .once(at: due), retry: .defaults).encoded(), firstRunMicros: due,
        createdAtMicros: Harness.start)
    }
    _ = try await store.insert(tasks)

    let stream = SlowStream()
    let running = Task { try await dispatcher.run() }
    let session = await dispatcher.addExecutor(executorID: "exec-1", operators: ["noop"], slots: 2, batches: true) {
      try await stream.write($0)
    }
    // Its clock measured inside the bound, as its first heartbeat would.
    _ = await dispatcher.heartbeat(session: session, skewMicros: 0)
    await dispatcher.grant(session: session, credits: 2)

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
    try await base.close()
  }
}

/// An executor's stream that holds every write until ``open()``, and keeps what was written.
private final class SlowStream: Sendable {
  private struct State {
    var open = false
    var held: [CheckedContinuation<Void, Never>] = []
    var writing: [CheckedContinuation<Void, Never>] = []
    var written: [Hourglass_V1_CoordinatorMessage] = []
    var readers: [(count: Int, continuation: CheckedContinuation<[Hourglass_V1_CoordinatorMessage], Never>)] = []
  }

  private let state = Mutex(State())

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
