import Synchronization

/// Gathers concurrent write requests into batches so that many callers share one durable commit.
///
/// Callers `submit` their items and suspend (or pass a completion). Up to `maxConcurrentBatches` drain loops take whole
/// requests from the queue until a batch holds `maxBatchItems` items (a single larger request is
/// taken alone), hand the batch to `commit`, and resume every caller of that batch with its
/// outcome: all succeed after the commit returns, or all fail with its error. A request is never
/// split across transactions, so a caller is acknowledged only when all of its items are durable.
///
/// A backend with one writer (SQLite) uses one drain loop; a client/server database can use a few,
/// one per pooled connection, so one batch commits while the next fills.
public final class GroupCommitter<Item: Sendable>: Sendable {
  /// Writes one batch durably, or throws and writes nothing.
  public typealias Commit = @Sendable ([Item]) async throws -> Void

  private struct Request {
    var items: [Item]
    var waiter: Waiter
  }

  /// Who is told a request's outcome: a suspended caller, or a callback.
  private enum Waiter {
    case task(CheckedContinuation<Void, any Error>)
    case callback(@Sendable (Result<Void, any Error>) -> Void)

    func resume(with result: Result<Void, any Error>) {
      switch self {
      case .task(let continuation): continuation.resume(with: result)
      case .callback(let completion): completion(result)
      }
    }
  }

  private struct State {
    var queue: [Request] = []
    var head = 0
    var activeDrains = 0
    var closed = false
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    var statistics = GroupCommitStatistics()
  }

  private let state = Mutex(State())
  private let commit: Commit
  private let maxBatchItems: Int
  private let maxConcurrentBatches: Int
  private let closedError: any Error
  private let betweenBatches: (@Sendable () async -> Void)?

  /// Creates a committer that writes batches of up to `maxBatchItems` items through `commit`,
  /// with at most `maxConcurrentBatches` batches in flight; `closedError` is thrown to callers
  /// that submit after ``close()``.
  ///
  /// `betweenBatches`, when given, is awaited by a drain loop after a batch's callers have been
  /// resumed and before it takes the next batch: a pause there spaces the transactions out,
  /// gathering what arrives meanwhile into the next one and leaving the store's writer free for
  /// other writes in between.
  public init(
    maxBatchItems: Int, maxConcurrentBatches: Int = 1, closedError: any Error,
    betweenBatches: (@Sendable () async -> Void)? = nil, commit: @escaping Commit
  ) {
    precondition(maxBatchItems > 0 && maxConcurrentBatches > 0)
    self.maxBatchItems = maxBatchItems
    self.maxConcurrentBatches = maxConcurrentBatches
    self.closedError = closedError
    self.betweenBatches = betweenBatches
    self.commit = commit
  }

  /// Queues `items` and returns once the batch holding them has committed; throws the batch's error
  /// otherwise (and then none of them is acknowledged).
  public func submit(_ items: [Item]) async throws {
    if items.isEmpty { return }
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
      enqueue(Request(items: items, waiter: .task(continuation)))
    }
  }

  /// Queues `items` without waiting: `completion` is told the outcome of the batch holding them,
  /// once, from the task that committed it (so it must not block). For callers that are not
  /// tasks, such as a handler answering on an event loop; ``submit(_:)`` otherwise.
  public func submit(_ items: [Item], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
    if items.isEmpty {
      completion(.success(()))
      return
    }
    enqueue(Request(items: items, waiter: .callback(completion)))
  }

  private func enqueue(_ request: Request) {
    let outcome: (start: Bool, rejected: Waiter?) = state.withLock { state in
      if state.closed { return (false, request.waiter) }
      state.queue.append(request)
      if state.activeDrains < maxConcurrentBatches {
        state.activeDrains += 1
        return (true, nil)
      }
      return (false, nil)
    }
    if let rejected = outcome.rejected {
      rejected.resume(with: .failure(closedError))
    } else if outcome.start {
      Task { await self.drain() }
    }
  }

  /// What has been committed so far.
  public var statistics: GroupCommitStatistics { state.withLock { $0.statistics } }

  /// Requests waiting for a batch (not yet being committed); a queue-depth figure for metrics.
  public var queuedRequests: Int { state.withLock { $0.queue.count - $0.head } }

  /// Refuses new submissions and waits until every queued request has been committed or failed.
  public func close() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = state.withLock { state -> Bool in
        state.closed = true
        if state.activeDrains == 0 { return true }
        state.closeWaiters.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
  }

  private func takeBatch() -> [Request]? {
    state.withLock { state -> [Request]? in
      var batch: [Request] = []
      var count = 0
      while state.head < state.queue.count {
        let next = state.queue[state.head]
        if !batch.isEmpty && count + next.items.count > maxBatchItems { break }
        batch.append(next)
        count += next.items.count
        state.head += 1
        if count >= maxBatchItems { break }
      }
      if state.head == state.queue.count {
        state.queue.removeAll(keepingCapacity: true)
        state.head = 0
      } else if state.head > 4096 {
        state.queue.removeFirst(state.head)
        state.head = 0
      }
      if batch.isEmpty {
        state.activeDrains -= 1
        if state.activeDrains == 0 && state.closed {
          let waiters = state.closeWaiters
          state.closeWaiters = []
          for waiter in waiters { waiter.resume() }
        }
        return nil
      }
      return batch
    }
  }

  private func drain() async {
    while let batch = takeBatch() {
      var items: [Item] = []
      items.reserveCapacity(batch.reduce(0) { $0 + $1.items.count })
      for request in batch { items.append(contentsOf: request.items) }
      do {
        try await commit(items)
        state.withLock {
          $0.statistics.batches += 1
          $0.statistics.items += items.count
          $0.statistics.requests += batch.count
          $0.statistics.largestBatch = max($0.statistics.largestBatch, items.count)
        }
        for request in batch { request.waiter.resume(with: .success(())) }
      } catch {
        state.withLock { $0.statistics.failedBatches += 1 }
        for request in batch { request.waiter.resume(with: .failure(error)) }
      }
      if let betweenBatches { await betweenBatches() }
    }
  }
}

/// Counters of a ``GroupCommitter``: how well requests were gathered.
public struct GroupCommitStatistics: Sendable, Hashable {
  /// Transactions committed.
  public var batches = 0
  /// Transactions that failed (every caller in them got the error).
  public var failedBatches = 0
  /// Items committed.
  public var items = 0
  /// Caller requests acknowledged.
  public var requests = 0
  /// The most items in one committed transaction.
  public var largestBatch = 0

  /// All zero.
  public init() {}
}
