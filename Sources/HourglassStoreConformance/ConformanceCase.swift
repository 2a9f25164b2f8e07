import HourglassCore
import HourglassStore

/// One behaviour every ``TaskStore`` backend must show, run by each backend's test target with
/// `@Test(arguments: ConformanceCase.all)`. The body gets a factory for fresh, empty stores and
/// throws a ``ConformanceFailure`` naming what differed.
public struct ConformanceCase: Sendable, CustomStringConvertible {
  /// Opens a fresh, empty store (the case closes it).
  public typealias Factory = @Sendable () async throws -> any TaskStore

  /// A short, unique name, shown as the test argument.
  public let name: String
  private let body: @Sendable (any TaskStore) async throws -> Void

  /// Declares a case.
  public init(_ name: String, body: @escaping @Sendable (any TaskStore) async throws -> Void) {
    self.name = name
    self.body = body
  }

  /// Runs the case against a fresh store from `factory`, closing it afterwards.
  public func run(_ factory: Factory) async throws {
    let store = try await factory()
    do {
      try await body(store)
    } catch {
      try? await store.close()
      throw error
    }
    try await store.close()
  }

  public var description: String { name }

  /// Every case, in a stable order.
  public static let all: [ConformanceCase] =
    insertCases + listCases + dueCases + deleteCases + leaseCases + resultCases + miscCases
}

/// A conformance expectation that did not hold.
public struct ConformanceFailure: Error, CustomStringConvertible {
  /// What was expected and what happened.
  public let message: String
  /// Where in the suite.
  public let line: UInt

  public var description: String { "conformance failure (line \(line)): \(message)" }
}

func expect(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) throws {
  if !condition { throw ConformanceFailure(message: message(), line: line) }
}

func expectEqual<T: Equatable>(
  _ actual: T, _ expected: T, _ what: String, line: UInt = #line
)
  throws
{
  if actual != expected {
    throw ConformanceFailure(message: "\(what): expected \(expected), got \(actual)", line: line)
  }
}

func expectThrows<T>(
  _ what: String, line: UInt = #line, _ body: () async throws -> T,
  matching: (TaskStoreError) -> Bool
) async throws {
  do {
    let value = try await body()
    throw ConformanceFailure(message: "\(what): expected an error, got \(value)", line: line)
  } catch let error as TaskStoreError {
    if !matching(error) {
      throw ConformanceFailure(message: "\(what): unexpected error \(error)", line: line)
    }
  }
}

/// Fixed instants so cases are deterministic: 2026-01-01T00:00Z plus offsets.
let t0: Int64 = 1_767_225_600_000_000
let hour = HourBucket.microsPerHour
let second: Int64 = 1_000_000

func makeIDs(_ count: Int, seed: UInt64 = 1, startMillis: Int64 = t0 / 1000) -> [TaskID] {
  var rng = SeededGenerator(seed: seed)
  return (0..<count).map { TaskID(unixMilliseconds: startMillis + Int64($0), using: &rng) }
}

func newTask(
  _ id: TaskID, owner: String = "alice", firstRun: Int64? = t0 + 10 * second,
  recurring: Bool = false, blob: TaskBlob? = nil, priority: Int32 = 0, maxAttempts: Int32 = 3
) -> NewTask {
  NewTask(
    id: id, owner: owner, name: "task-\(id)", operatorName: "exec", blob: blob,
    arguments: ["--flag", "välue ✓", "quote \" back\\slash", "tab\tnew\nline\u{1}"], timeZone: "Europe/Paris",
    scheduleSpec: Array(#"{"kind":"once"}"#.utf8), recurring: recurring, priority: priority,
    maxAttempts: maxAttempts, timeoutMicros: 30 * second, firstRunMicros: firstRun,
    createdAtMicros: t0)
}

/// Inserts one active task and leases its first run.
func leasedTask(
  _ store: any TaskStore, seed: UInt64 = 99, recurring: Bool = false, owner: String = "alice"
) async throws -> (TaskID, Lease) {
  let id = makeIDs(1, seed: seed)[0]
  try await store.insert([newTask(id, owner: owner, recurring: recurring)])
  let lease = try await store.createLease(
    taskID: id, owner: "executor-1", now: t0 + 10 * second, expiresAt: t0 + 40 * second)
  return (id, lease)
}
