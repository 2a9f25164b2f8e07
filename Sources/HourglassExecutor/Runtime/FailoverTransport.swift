import HourglassRPC
import NIOCore
import Synchronization

/// Opens every stream on one of several transports (one per coordinator address), moving on
/// to the next after a failure to open. An executor holds one stream at a time, so this gives
/// it fail-over between coordinators that share a store.
public final class FailoverTransport: ClientTransport, Sendable {
  private let transports: [any ClientTransport]
  private let current: Mutex<Int>

  /// Creates a transport over `transports`, tried in order (wrapping around), starting with the
  /// one at `start`. Executors of a cluster start at a random one, which spreads them over the
  /// coordinators: each coordinator dispatches only its own partitions, to its own executors.
  public init(_ transports: [any ClientTransport], startingAt start: Int = 0) {
    precondition(!transports.isEmpty, "a fail-over transport needs at least one transport")
    precondition(transports.indices.contains(start), "the first transport must be one of them")
    self.transports = transports
    self.current = Mutex(start)
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
