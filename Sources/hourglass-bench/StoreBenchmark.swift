import ArgumentParser
import Foundation
import HourglassCore
import HourglassPostgresLauncher
import HourglassStore
import HourglassStorePostgres
import HourglassStoreSQLite
import Synchronization

/// `hourglass-bench store`: acknowledged insert throughput of the durable task store under 1, 64
/// and 512 concurrent writers, the latency of loading a shard's due entries from a large store,
/// and (SQLite) the ceiling: the same rows in one big transaction.
struct StoreBenchmark: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "store",
    abstract: "Durable task store: group-commit insert throughput and due-entry load latency.")

  enum Backend: String, ExpressibleByArgument, CaseIterable {
    case sqlite, postgres
  }

  @Option(help: "sqlite or postgres.")
  var backend: Backend = .sqlite

  @Flag(help: "Print the report as JSON.")
  var json = false

  @Option(help: "Concurrent writer counts to measure, comma separated.")
  var writers: String = "1,64,512"

  @Option(help: "Tasks inserted per run with many writers (each insert call carries one task).")
  var rows: Int = 60_000

  @Option(help: "Tasks inserted in the single-writer run (one synced commit each).")
  var singleWriterRows: Int = 2_000

  @Option(help: "Bytes per task (arguments plus schedule), about 1 KB.")
  var taskBytes: Int = 1_000

  @Option(help: "Tasks in the store for the due-load measurement; 0 skips it.")
  var dueStoreSize: Int = 1_000_000

  @Option(help: "A second, larger store for the due-load measurement (SQLite); 0 skips it.")
  var largeDueStoreSize: Int = 0

  @Option(help: "Due entries in the measured shard.")
  var dueEntries: Int = 10_000

  @Option(help: "Repetitions of the due-load query.")
  var dueRepetitions: Int = 30

  @Option(help: "Directory for SQLite files (default: a new temporary directory).")
  var directory: String?

  @Option(help: "postgres://user[:password]@host:port/database; without it a throwaway server is started.")
  var postgresURL: String?

  @Option(help: "Connections used for concurrent group-commit batches (PostgreSQL).")
  var postgresWriterConnections: Int = 4

  func run() async throws {
    let writerCounts = writers.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !writerCounts.isEmpty, writerCounts.allSatisfy({ $0 > 0 }) else {
      throw ValidationError("--writers must list positive numbers")
    }
    let workDirectory =
      directory ?? FileManager.default.temporaryDirectory.path
      + "/hourglass-bench-store-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
    defer { if directory == nil { try? FileManager.default.removeItem(atPath: workDirectory) } }

    var server: ThrowawayPostgres?
    if backend == .postgres && postgresURL == nil {
      server = try await BenchPostgres.start(in: workDirectory)
    }
    defer { server?.stop(immediately: false, removingDirectory: false) }

    var report = BenchmarkReport(benchmark: "store")
    report.parameters = [
      "backend": backend.rawValue, "task_bytes": String(taskBytes), "rows": String(rows),
      "single_writer_rows": String(singleWriterRows), "cores": String(ProcessInfo.processInfo.activeProcessorCount),
      "synchronous": backend == .sqlite ? "FULL" : "synchronous_commit=on",
    ]
    var storeNumber = 0
    let factory: (Int32) async throws -> any TaskStore = { partitions in
      storeNumber += 1
      switch backend {
      case .sqlite:
        var configuration = SQLiteTaskStore.Configuration.defaults(
          path: "\(workDirectory)/store-\(storeNumber).sqlite")
        configuration.partitionCount = partitions
        return try await SQLiteTaskStore(configuration: configuration)
      case .postgres:
        var configuration = try postgresConfiguration(server: server, database: "bench\(storeNumber)")
        configuration.partitionCount = partitions
        configuration.writerConnections = postgresWriterConnections
        configuration.maxConnections = postgresWriterConnections + 4
        return try await PostgresTaskStore(configuration: configuration)
      }
    }

    // Insert throughput.
    var ceiling: Double?
    if backend == .sqlite {
      let store = try await factory(64)
      let tasks = makeTasks(count: rows, seed: 1)
      let start = ContinuousClock.now
      try await store.insert(tasks)
      let seconds = (ContinuousClock.now - start).seconds
      try await store.close()
      ceiling = Double(rows) / seconds
      report.results.append([
        "name": .string("ceiling_one_transaction"), "rows": .int(rows),
        "seconds": .double(seconds), "rows_per_second": .double(ceiling!),
      ])
    }
    for count in writerCounts {
      let store = try await factory(64)
      let total = count == 1 ? singleWriterRows : rows
      let tasks = makeTasks(count: total, seed: UInt64(count) + 10)
      let result = try await measureInserts(store: store, tasks: tasks, writers: count)
      var row: [String: BenchmarkValue] = [
        "name": .string("insert_\(count)_writers"), "writers": .int(count), "rows": .int(total),
        "seconds": .double(result.seconds), "rows_per_second": .double(result.rate),
        "latency_p50_ms": .double(result.p50 * 1000), "latency_p99_ms": .double(result.p99 * 1000),
      ]
      if let ceiling { row["fraction_of_ceiling"] = .double(result.rate / ceiling) }
      if let sqlite = store as? SQLiteTaskStore {
        let stats = sqlite.groupCommitStatistics
        row["transactions"] = .int(stats.batches)
        row["mean_rows_per_transaction"] = .double(Double(stats.items) / Double(max(stats.batches, 1)))
      } else if let pg = store as? PostgresTaskStore {
        let stats = pg.groupCommitStatistics
        row["transactions"] = .int(stats.batches)
        row["mean_rows_per_transaction"] = .double(Double(stats.items) / Double(max(stats.batches, 1)))
      }
      report.results.append(row)
      try await store.close()
    }

    // Due-entry load latency.
    for size in [dueStoreSize, backend == .sqlite ? largeDueStoreSize : 0] where size > 0 {
      let store = try await factory(64)
      let fill = try await fillForDueLoad(store: store, size: size)
      for limit in [dueEntries, 1_000] {
        var samples: [Double] = []
        for _ in 0..<dueRepetitions {
          let start = ContinuousClock.now
          let entries = try await store.loadDue(
            shard: fill.shard, from: fill.shard.bucket.startMicros, until: fill.shard.bucket.endMicros,
            limit: limit)
          samples.append((ContinuousClock.now - start).seconds)
          guard entries.count == min(limit, dueEntries) else {
            throw ValidationError("expected \(min(limit, dueEntries)) due entries, got \(entries.count)")
          }
        }
        samples.sort()
        report.results.append([
          "name": .string("load_due_\(limit)_of_\(size)"), "store_tasks": .int(size),
          "entries": .int(limit), "p50_ms": .double(percentile(samples, 0.5) * 1000),
          "p99_ms": .double(percentile(samples, 0.99) * 1000), "fill_seconds": .double(fill.seconds),
        ])
      }
      try await store.close()
    }
    report.print(json: json)
  }

  // MARK: Helpers

  func makeTasks(
    count: Int, seed: UInt64, firstRun: (Int) -> Int64 = { _ in 1_767_225_600_000_000 }
  )
    -> [NewTask]
  {
    var rng = SeededGenerator(seed: seed)
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    let spec = Array(#"{"kind":"cron","expression":"*/5 * * * *"}"#.utf8)
    let filler = String(repeating: "x", count: max(0, taskBytes - spec.count))
    return (0..<count).map { i in
      NewTask(
        id: TaskID(unixMilliseconds: now + Int64(i / 1000), using: &rng), owner: "bench-\(i % 100)",
        name: "task-\(i)", operatorName: "exec", arguments: [filler], scheduleSpec: spec,
        recurring: true, maxAttempts: 3, firstRunMicros: firstRun(i), createdAtMicros: now * 1000)
    }
  }

  struct InsertResult {
    var seconds: Double
    var rate: Double
    var p50: Double
    var p99: Double
  }

  func measureInserts(store: any TaskStore, tasks: [NewTask], writers: Int) async throws -> InsertResult {
    let next = BenchCounter()
    let start = ContinuousClock.now
    let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
      for _ in 0..<writers {
        group.addTask {
          var local: [Double] = []
          while true {
            let index = next.value.add(1, ordering: .relaxed).oldValue
            if index >= tasks.count { return local }
            let begin = ContinuousClock.now
            try await store.insert([tasks[index]])
            local.append((ContinuousClock.now - begin).seconds)
          }
        }
      }
      var all: [Double] = []
      for try await part in group { all += part }
      return all.sorted()
    }
    let seconds = (ContinuousClock.now - start).seconds
    return InsertResult(
      seconds: seconds, rate: Double(tasks.count) / seconds, p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99))
  }

  /// Fills a store with `size` tasks: `dueEntries` of them in one shard (partition 0, one hour),
  /// the rest spread over the other hours of a week, so the measured shard holds exactly those.
  func fillForDueLoad(store: any TaskStore, size: Int) async throws -> (shard: ShardID, seconds: Double) {
    let bucket = HourBucket(containing: 1_767_225_600_000_000)
    let shard = ShardID(partition: Partition(rawValue: 0), bucket: bucket)
    var rng = SeededGenerator(seed: 77)
    let spec = Array(#"{"kind":"once"}"#.utf8)
    let filler = String(repeating: "y", count: max(0, taskBytes - spec.count))
    let start = ContinuousClock.now
    var inserted = 0
    var targeted = 0
    var millis = Int64(Date().timeIntervalSince1970 * 1000)
    let batch = 10_000
    while inserted < size {
      var tasks: [NewTask] = []
      tasks.reserveCapacity(batch)
      while tasks.count < batch && inserted + tasks.count < size {
        millis += 1
        var id = TaskID(unixMilliseconds: millis, using: &rng)
        let due: Int64
        if targeted < dueEntries {
          while Partition(taskID: id, count: store.partitionCount) != shard.partition {
            id = TaskID(unixMilliseconds: millis, using: &rng)
          }
          due = bucket.startMicros + Int64.random(in: 0..<HourBucket.microsPerHour, using: &rng)
          targeted += 1
        } else {
          let hour = Int64.random(in: 1..<168, using: &rng)
          due =
            bucket.startMicros + hour * HourBucket.microsPerHour
            + Int64.random(in: 0..<HourBucket.microsPerHour, using: &rng)
        }
        tasks.append(
          NewTask(
            id: id, owner: "fill-\(tasks.count % 100)", operatorName: "exec", arguments: [filler],
            scheduleSpec: spec, firstRunMicros: due, createdAtMicros: millis * 1000))
      }
      // Tasks of the measured shard are spread through the fill, not all at the start.
      tasks.shuffle(using: &rng)
      try await store.insert(tasks)
      inserted += tasks.count
    }
    return (shard, (ContinuousClock.now - start).seconds)
  }

  func postgresConfiguration(
    server: ThrowawayPostgres?, database: String
  ) throws
    -> PostgresTaskStore.Configuration
  {
    if let server {
      try server.createDatabase(database)
      return .defaults(host: server.host, port: server.port, username: server.username, database: database)
    }
    guard let url = postgresURL.flatMap(URLComponents.init(string:)), let host = url.host else {
      throw ValidationError("--postgres-url must look like postgres://user@host:port/database")
    }
    var configuration = PostgresTaskStore.Configuration.defaults(
      host: host, port: url.port ?? 5432, username: url.user ?? "postgres",
      database: String(url.path.dropFirst()))
    configuration.password = url.password
    return configuration
  }
}

/// A shared counter the writers take task indexes from.
final class BenchCounter: Sendable {
  let value = Atomic<Int>(0)
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
  guard !sorted.isEmpty else { return 0 }
  return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

extension Duration {
  var seconds: Double {
    let (s, attoseconds) = components
    return Double(s) + Double(attoseconds) / 1e18
  }
}
