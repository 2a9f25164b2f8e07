/// Runs `body` in a task and tells `completion` its outcome: how a callback API falls back to
/// async code it cannot call synchronously.
public func completeInTask<Success: Sendable>(
  _ completion: @escaping @Sendable (Result<Success, any Error>) -> Void, _ body: @escaping @Sendable () async throws -> Success
) {
  Task {
    do {
      completion(.success(try await body()))
    } catch {
      completion(.failure(error))
    }
  }
}
