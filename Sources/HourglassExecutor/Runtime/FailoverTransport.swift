import HourglassRPC
import NIOCore
import Synchronization

/// Opens every stream on one of several transports (one per coordinator address), moving on
/// to the next after a failure to open. An executor holds one stream at a time, so this gives
/// it fail-over between coordinators that share a store.
public final class FailoverTransport: ClientTransport, Sendable {
  private let transports: [any ClientTransport]
  private let current = Mutex(0)

  /// Creates a transport over `transports`, tried in order, starting with the first.
  public init(_ transports: [any ClientTransport]) {
    precondition(!transports.isEmpty, "a fail-over transport needs at least one transport")
    self.transports = transports
  }

  public func openStream(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool) async throws -> RPCClientStream {
    let index = current.withLock { $0 }
    do {
      return try await transports[index].openStream(head, firstMessage: firstMessage, endStream: endStream)
    } catch {
      // The caller retries with its own backoff; the next attempt goes to the next address.
      let count = transports.count
      current.withLock { if $0 == index { $0 = (index + 1) % count } }
      throw error
    }
  }
}
