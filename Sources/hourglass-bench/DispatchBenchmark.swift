import ArgumentParser
import Foundation
import HourglassCertificates
import HourglassCoordinator
import HourglassCore
import HourglassExecutor
import HourglassPostgresLauncher
import HourglassRPC
import HourglassStore
import HourglassStorePostgres
import HourglassStoreSQLite
import HourglassTransport
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// `hourglass-bench dispatch`: how late due runs start, and how many runs per second go from due
/// to recorded result, through a real coordinator on SQLite (or several sharing PostgreSQL, with
/// `--coordinators`) and real executors over loopback TLS, all in this process so due times and
/// start times are read from one clock.
///
/// For each store size in `--stored`, a fresh store is filled with that many tasks due days
/// ahead (stored, not due), then a burst of runs all due at one instant and a steady stream at
/// `--rate` per second are inserted; the coordinator loads them from the store as their time
/// approaches, exactly as it loads any task.
struct DispatchBenchmark: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dispatch",
    abstract: "Dispatch lateness (due → executor start) and runs/s (due → result recorded), noop operator."
  )

  @Option(help: "Stored (not due) task counts to measure against, comma separated; each gets a fresh store.")
  var stored: String = "10000,1000000"

  @Option(help: "Runs due at one instant.")
  var burst: Int = 20_000

  @Option(help: "Seconds the burst has before the steady phase begins.")
  var burstWindow: Double = 10

  @Option(help: "Runs per second in the steady phase.")
  var rate: Int = 5_000

  @Option(help: "Seconds of the steady phase.")
  var steadySeconds: Double = 10

  @Option(help: "Executors (each its own TLS connection to every coordinator).")
  var executors: Int = 4

  @Option(
    help:
      "Coordinators sharing the store (postgres only: a cluster that splits the partitions); every executor holds a stream to each.")
  var coordinators: Int = 1

  @Option(help: "Slots (credits) per executor.")
  var slots: Int = 256

  @Option(help: "Results per group-committed transaction at most (the coordinator's resultBatch; its default when absent).")
  var resultBatch: Int?

  @Option(help: "Least microseconds between two result transactions (the coordinator's resultSpacingMicros; its default when absent).")
  var resultSpacingUs: Int?

  @Option(
    help:
      "How far ahead of its due time a run may be leased, in microseconds (the coordinator's leaseAheadMicros; its default when absent; 0 leases runs only once due)."
  )
  var leaseAheadUs: Int?

  @Option(help: "WAL pages appended between checkpoints (the SQLite store's walAutocheckpointPages; its default when absent).")
  var walCheckpointPages: Int?

  @Flag(help: "SQLite's automatic checkpoint inside the writer's commits instead of the store's background checkpointer.")
  var checkpointInCommit = false

  @Option(
    name: .customLong("writer-cache-mib"), help: "Page cache of the SQLite writer connection, in MiB (the store's cacheSizeKiB; its default when absent).")
  var writerCacheMiB: Int?

  @Option(help: "Tasks per insert call while preloading the store.")
  var preloadBatch: Int = 20_000

  @Flag(
    inversion: .prefixedNo,
    help:
      "Flush every file system (sync) after the preload, before the measured runs: dirty pages other processes left (a build's output) are otherwise written back during the measurement, and the store's syncs wait for them."
  )
  var syncFirst = true

  @Option(help: "Folder for the SQLite files (a temporary one by default).")
  var directory: String?

  @Option(help: "sqlite, or postgres (a throwaway server the benchmark starts in its folder).")
  var backend: StoreBenchmark.Backend = .sqlite

  @Option(
    help:
      "Write a trace of each store size's measured runs to this path (suffixed with the store size): every run's scheduled and start instants, the late wake-ups of two probes (a thread and a task on the concurrency pool sleeping 1 ms at a time), and on SQLite every write transaction and checkpoint pass (queued, started, executed, committed), all wall-clock microseconds."
  )
  var trace: String?

  @Flag(help: "Print JSON.")
  var json = false

  func run() async throws {
    let sizes = stored.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !sizes.isEmpty, sizes.allSatisfy({ $0 >= 0 }) else { throw ValidationError("--stored must list counts") }
    guard burst >= 0, rate > 0, steadySeconds > 0, executors > 0, slots > 0, preloadBatch > 0, coordinators > 0 else {
      throw ValidationError("counts, rate and durations must be positive")
    }
    guard coordinators == 1 || backend == .postgres else {
      throw ValidationError("--coordinators above 1 needs --backend postgres: only PostgreSQL is shared by a cluster")
    }
    let folder = directory ?? NSTemporaryDirectory() + "hourglass-dispatch-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { if directory == nil { try? FileManager.default.removeItem(atPath: folder) } }
    let server = backend == .postgres ? try await BenchPostgres.start(in: folder) : nil
    defer { server?.stop(immediately: true, removingDirectory: false) }

    var report = BenchmarkReport(benchmark: "dispatch")
    report.parameters = [
      "burst": "\(burst)", "rate_per_s": "\(rate)", "steady_s": "\(steadySeconds)", "executors": "\(executors)",
      "slots_per_executor": "\(slots)", "coordinators": "\(coordinators)", "operator": "noop (records its start on the wall clock)",
      "store": backend == .sqlite ? "sqlite synchronous=FULL" : "postgres synchronous_commit=on", "load_ahead_s": "4",
      "cores": "\(ProcessInfo.processInfo.activeProcessorCount)",
    ]
    for (index, size) in sizes.enumerated() {
      var storeLogger = Logger(label: "bench.dispatch.store")
      storeLogger.logLevel = .error
      var stores: [any TaskStore] = []
      let timeline = trace == nil ? nil : SQLiteTimeline()
      if let server {
        let configuration = try await BenchPostgres.coordinatorStore(on: server, database: "dispatch\(index)")
        // One store (its own connection pool) per coordinator, as separate processes would have.
        for _ in 0..<coordinators { stores.append(try await PostgresTaskStore(configuration: configuration, logger: storeLogger)) }
      } else {
        var storeConfiguration = SQLiteTaskStore.Configuration.defaults(path: "\(folder)/dispatch-\(index).db")
        if let walCheckpointPages { storeConfiguration.walAutocheckpointPages = walCheckpointPages }
        if checkpointInCommit { storeConfiguration.backgroundCheckpoints = false }
        if let writerCacheMiB { storeConfiguration.cacheSizeKiB = writerCacheMiB * 1024 }
        stores.append(try await SQLiteTaskStore(configuration: storeConfiguration, logger: storeLogger, timeline: timeline))
      }
      let rows = try await measure(storedTasks: size, stores: stores, timeline: timeline)
      report.results += rows
      if !json {
        for row in rows {
          let name = row["name"].map { "\($0)" } ?? "-"
          FileHandle.standardError.write(Data("  done: \(name)\n".utf8))
        }
      }
    }
    report.print(json: json)
  }

  /// One store size: preload, then the burst and the steady phase, through one coordinator per
  /// store in `stores` (several share one PostgreSQL database).
  private func measure(storedTasks: Int, stores: [any TaskStore], timeline: SQLiteTimeline?) async throws -> [[String: BenchmarkValue]] {
    let store = stores[0]
    var logger = Logger(label: "bench.dispatch")
    logger.logLevel = .error
    var rows: [[String: BenchmarkValue]] = []

    // 1. Stored, not due: days ahead, spread over a day of hour buckets.
    let preloadStart = ContinuousClock.now
    try await preload(store: store, count: storedTasks)
    let preloadSeconds = seconds(ContinuousClock.now - preloadStart)
    // Other processes' dirty pages (a build that just ended leaves hundreds of MB) are written
    // back about 30 s later; a store sync that comes during that writeback waits for it, 50–350
    // ms on this machine, and every lease waits behind it. Flushed here, they do not land in
    // the measurement.
    let syncStart = ContinuousClock.now
    if syncFirst { sync() }
    rows.append([
      "name": .string("preload_\(storedTasks)"), "tasks": .int(storedTasks), "seconds": .double(preloadSeconds),
      "tasks_per_s": .double(storedTasks == 0 ? 0 : Double(storedTasks) / preloadSeconds),
      "sync_seconds": .double(syncFirst ? seconds(ContinuousClock.now - syncStart) : -1),
    ])

    // 2. The measured runs: a burst at t0, then `rate` per second from t1. Inserted before the
    //    coordinator starts, with enough lead that the insert is over before the first is due.
    let steadyCount = Int(Double(rate) * steadySeconds)
    let lead = 4.0 + Double(burst + steadyCount) / 8_000
    let t0 = WallClock.nowMicros() + Int64(lead * 1_000_000)
    let t1 = t0 + Int64(burstWindow * 1_000_000)
    let spacing = 1_000_000.0 / Double(rate)
    let spec = StoredTaskSpec(schedule: .once(at: t0), retry: RetryPolicy.defaults).encoded()
    var due: [Int64] = Array(repeating: t0, count: burst)
    due += (0..<steadyCount).map { t1 + Int64(Double($0) * spacing) }
    for start in stride(from: 0, to: due.count, by: preloadBatch) {
      let now = WallClock.nowMicros()
      let batch = due[start..<min(due.count, start + preloadBatch)].map { at in
        NewTask(
          id: TaskID.now(), owner: "bench-user", operatorName: "noop", scheduleSpec: spec, maxAttempts: 1, firstRunMicros: at, createdAtMicros: now)
      }
      try await store.insert(batch)
    }
    guard WallClock.nowMicros() < t0 - 2_000_000 else {
      throw ValidationError("inserting the measured runs took too long on this machine; lower --burst or --rate")
    }

    // 3. Coordinators on TLS, and executors connected to every one of them.
    let ca = try DevelopmentCA(name: "bench CA")
    let server = try ca.issue(name: "coordinator", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
    let serverCredentials = TLSCredentials(
      trustedCAPEM: ca.authority.certificatePEM, certificatePEM: server.certificatePEM, privateKeyPEM: server.privateKeyPEM)
    var configuration = CoordinatorConfiguration.defaults
    configuration.loadAheadMicros = 4_000_000
    if let resultBatch { configuration.resultBatch = resultBatch }
    if let resultSpacingUs { configuration.resultSpacingMicros = Int64(resultSpacingUs) }
    if let leaseAheadUs { configuration.leaseAheadMicros = Int64(leaseAheadUs) }
    let running = try stores.enumerated().map { index, store in
      var configuration = configuration
      configuration.coordinatorID = "bench-coordinator-\(index)"
      return try Coordinator(
        configuration: configuration, store: store, tls: .init(host: "127.0.0.1", port: 0, credentials: serverCredentials), logger: logger)
    }
    let recorder = StartRecorder(capacity: due.count)
    let probes = trace == nil ? nil : StallProbes()
    let group = ServiceGroup(services: running, gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)

    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      var ports: [Int] = []
      for coordinator in running { ports.append(try await coordinator.port()!) }
      var executorsRunning: [Executor<ContinuousClock>] = []
      for n in 0..<executors {
        let name = "bench-executor-\(n)"
        let identity = try ca.issue(name: name, role: .executor)
        let credentials = TLSCredentials(
          trustedCAPEM: ca.authority.certificatePEM, certificatePEM: identity.certificatePEM, privateKeyPEM: identity.privateKeyPEM)
        let transports: [any ClientTransport] = try ports.map { port in
          try RPCTLSConnection(configuration: .init(host: "127.0.0.1", port: port, credentials: credentials), logger: logger)
        }
        var executorConfiguration = ExecutorConfiguration.defaults
        executorConfiguration.executorID = name
        executorConfiguration.slots = slots
        executorConfiguration.operators = ["noop"]
        executorConfiguration.drainGrace = .seconds(5)
        let executor = Executor(
          configuration: executorConfiguration, transports: transports, clock: ContinuousClock(), logger: logger,
          operators: [TimedNoopOperator(recorder: recorder)])
        executorsRunning.append(executor)
        tasks.addTask { try await executor.run() }
      }

      // Burst: done when every burst run's result is recorded.
      try await sleep(untilWallMicros: t0)
      let burstCPU = processCPUSeconds()
      let burstDone = try await waitForResults(running, count: burst, deadlineMicros: t1 + 120_000_000)
      let burstCPUSeconds = processCPUSeconds() - burstCPU
      // Steady: done when every run's result is recorded.
      try await sleep(untilWallMicros: t1)
      let steadyCPU = processCPUSeconds()
      let steadyEnd = t1 + Int64(steadySeconds * 1_000_000)
      let allDone = try await waitForResults(running, count: due.count, deadlineMicros: steadyEnd + 120_000_000)
      let steadyCPUSeconds = processCPUSeconds() - steadyCPU
      let starts = recorder.snapshot()
      if let trace, let probes {
        try await probes.stop().write(
          to: "\(trace).\(storedTasks)", starts: starts, burstAt: t0, steadyAt: t1, store: timeline?.snapshot ?? [])
      }

      let burstLateness = starts.filter { $0.scheduled < t1 }.map { $0.started - $0.scheduled }
      let steadyLateness = starts.filter { $0.scheduled >= t1 }.map { $0.started - $0.scheduled }
      if burst > 0 {
        var row = latencyRow("burst_\(burst)_stored_\(storedTasks)", burstLateness)
        row["end_to_end_runs_per_s"] = .double(burstDone.map { Double(burst) / (Double($0 - t0) / 1e6) } ?? 0)
        row["recorded"] = .int(burstDone == nil ? -1 : burst)
        row["last_result_after_due_ms"] = .double(burstDone.map { Double($0 - t0) / 1000 } ?? -1)
        row["cpu_seconds"] = .double(burstCPUSeconds)
        rows.append(row)
      }
      var row = latencyRow("steady_\(rate)_per_s_stored_\(storedTasks)", steadyLateness)
      let lastDue = steadyCount > 0 ? due[due.count - 1] : t1
      row["end_to_end_runs_per_s"] = .double(allDone.map { Double(steadyCount) / (Double($0 - t1) / 1e6) } ?? 0)
      row["last_result_after_last_due_ms"] = .double(allDone.map { Double($0 - lastDue) / 1000 } ?? -1)
      row["cpu_seconds"] = .double(steadyCPUSeconds)
      if running.count > 1 {
        // How the runs (burst and steady) split between the coordinators.
        var split: [String] = []
        for coordinator in running { split.append("\(await coordinator.recordedResults())") }
        row["recorded_per_coordinator"] = .string(split.joined(separator: "/"))
      }
      rows.append(row)

      for executor in executorsRunning { executor.drain() }
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
    }
    for store in stores { try await store.close() }
    return rows
  }

  /// Inserts `count` tasks due 2–3 days ahead, in big batches, two calls in flight.
  private func preload(store: any TaskStore, count: Int) async throws {
    guard count > 0 else { return }
    let base = WallClock.nowMicros() + 2 * 86_400_000_000
    let spec = StoredTaskSpec(schedule: .once(at: base), retry: .defaults).encoded()
    let batch = preloadBatch
    try await withThrowingTaskGroup(of: Void.self) { group in
      var next = 0
      var inFlight = 0
      while next < count || inFlight > 0 {
        while inFlight < 2 && next < count {
          let range = next..<min(count, next + batch)
          next = range.upperBound
          inFlight += 1
          group.addTask {
            var generator = SystemRandomNumberGenerator()
            let now = WallClock.nowMicros()
            let tasks = range.map { i in
              NewTask(
                id: TaskID(unixMilliseconds: now / 1000, using: &generator), owner: "bench-stored", operatorName: "noop", scheduleSpec: spec,
                firstRunMicros: base + Int64(i % 86_400) * 1_000_000, createdAtMicros: now)
            }
            try await store.insert(tasks)
          }
        }
        try await group.next()
        inFlight -= 1
      }
    }
  }

  private func sleep(untilWallMicros instant: Int64) async throws {
    let delay = instant - WallClock.nowMicros()
    if delay > 0 { try await Task.sleep(for: .microseconds(delay)) }
  }

  /// Polls the coordinators' recorded-results counters until together they reach `count`;
  /// returns the wall clock instant that was first seen, or nil at the deadline.
  private func waitForResults(_ coordinators: [Coordinator], count: Int, deadlineMicros: Int64) async throws -> Int64? {
    while WallClock.nowMicros() < deadlineMicros {
      var recorded = 0
      for coordinator in coordinators { recorded += await coordinator.recordedResults() }
      if recorded >= count { return WallClock.nowMicros() }
      try await Task.sleep(for: .milliseconds(2))
    }
    return nil
  }

  private func latencyRow(_ name: String, _ values: [Int64]) -> [String: BenchmarkValue] {
    let sorted = values.sorted()
    func pick(_ p: Double) -> Double {
      guard !sorted.isEmpty else { return 0 }
      return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
    }
    return [
      "name": .string(name), "runs_started": .int(sorted.count), "lateness_p50_ms": .double(pick(0.5)),
      "lateness_p99_ms": .double(pick(0.99)), "lateness_p999_ms": .double(pick(0.999)),
      "lateness_max_ms": .double(sorted.last.map { Double($0) / 1000 } ?? 0),
    ]
  }

  private func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
  }
}

/// User and system CPU time of this whole process so far (coordinator, executors, benchmark).

/// Every run's scheduled instant and the instant its operator started, on the wall clock.
final class StartRecorder: Sendable {
  struct Start: Sendable {
    var scheduled: Int64
    var started: Int64
  }

  private let starts: Mutex<[Start]>

  init(capacity: Int) {
    var initial: [Start] = []
    initial.reserveCapacity(capacity)
    starts = Mutex(initial)
  }

  func record(scheduled: Int64, started: Int64) {
    starts.withLock { $0.append(Start(scheduled: scheduled, started: started)) }
  }

  func snapshot() -> [Start] { starts.withLock { $0 } }
}

/// Two probes that sleep 1 ms at a time and note every wake-up more than 2 ms late: one on a
/// thread of its own (late when the whole process, or the machine, did not get a core), one a
/// task on Swift's concurrency pool (late also when the pool's threads were all busy or blocked).
final class StallProbes: Sendable {
  struct Late: Sendable {
    var at: Int64
    var lateMicros: Int64
  }

  struct Trace {
    var thread: [Late]
    var task: [Late]

    /// One line per event: `run scheduled started`, `thread at late`, `task at late`,
    /// `store kind queued started executed committed resumed count wal-frames`, and the phases'
    /// instants.
    func write(to path: String, starts: [StartRecorder.Start], burstAt: Int64, steadyAt: Int64, store: [SQLiteTimeline.Event]) throws {
      var text = "burst \(burstAt)\nsteady \(steadyAt)\n"
      text.reserveCapacity(starts.count * 36 + store.count * 80)
      for start in starts { text += "run \(start.scheduled) \(start.started)\n" }
      for late in thread { text += "thread \(late.at) \(late.lateMicros)\n" }
      for late in task { text += "task \(late.at) \(late.lateMicros)\n" }
      for event in store {
        text +=
          "store \(event.kind.rawValue) \(event.queued) \(event.started) \(event.executed) \(event.committed) \(event.resumed) \(event.count) \(event.walFrames)\n"
      }
      try text.write(toFile: path, atomically: false, encoding: .utf8)
    }
  }

  private final class State: Sendable {
    let stopped = Atomic(false)
    let threadLate = Mutex<[Late]>([])
    let taskLate = Mutex<[Late]>([])
  }

  private let state = State()
  private let task: Task<Void, Never>

  init() {
    let state = self.state
    let thread = Thread {
      while !state.stopped.load(ordering: .relaxed) {
        let before = WallClock.nowMicros()
        usleep(1000)
        let after = WallClock.nowMicros()
        if after - before > 3000 { state.threadLate.withLock { $0.append(Late(at: before, lateMicros: after - before - 1000)) } }
      }
    }
    thread.start()
    task = Task {
      while !state.stopped.load(ordering: .relaxed) {
        let before = WallClock.nowMicros()
        try? await Task.sleep(for: .milliseconds(1))
        let after = WallClock.nowMicros()
        if after - before > 3000 { state.taskLate.withLock { $0.append(Late(at: before, lateMicros: after - before - 1000)) } }
      }
    }
  }

  func stop() async -> Trace {
    state.stopped.store(true, ordering: .relaxed)
    await task.value
    return Trace(thread: state.threadLate.withLock { $0 }, task: state.taskLate.withLock { $0 })
  }
}

/// `noop`, measured: reads the wall clock the moment the executor hands it the run, records it
/// beside the run's scheduled instant, and succeeds.
struct TimedNoopOperator: Operator {
  let recorder: StartRecorder
  var name: String { "noop" }

  func run(_ request: RunRequest, cancellation: RunCancellation) async -> RunOutcome {
    measured(request)
  }

  /// As the built-in `noop`: done at once, so the executor starts no task for it.
  func immediateOutcome(_ request: RunRequest) -> RunOutcome? {
    measured(request)
  }

  private func measured(_ request: RunRequest) -> RunOutcome {
    let started = WallClock.nowMicros()
    let scheduled = Int64((request.scheduledAt.timeIntervalSince1970 * 1_000_000).rounded())
    recorder.record(scheduled: scheduled, started: started)
    let now = Date()
    return RunOutcome(status: .succeeded, started: now, finished: now)
  }
}
