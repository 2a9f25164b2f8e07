import HourglassRPC
import NIOCore
import Synchronization

/// A transport that can be cut, as a coordinator's connections are when it goes away: after
/// ``sever()`` every stream it opened is cancelled and every new one fails with UNAVAILABLE.
/// (Stopping a coordinator in these tests stops its dispatching but not its in-process server.)
final class SeveringTransport: ClientTransport, Sendable {
  private let base: any ClientTransport
  private let state = Mutex<(severed: Bool, writers: [any ClientStreamWriter])>((false, []))

  init(_ base: any ClientTransport) {
    self.base = base
  }

  func openStream(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool) async throws -> RPCClientStream {
    if state.withLock({ $0.severed }) { throw RPCError(code: .unavailable, message: "the coordinator is gone") }
    let stream = try await base.openStream(head, firstMessage: firstMessage, endStream: endStream)
    state.withLock { $0.writers.append(stream.writer) }
    return stream
  }

  /// Cancels every stream opened so far and refuses new ones.
  func sever() {
    let writers = state.withLock { state in
      state.severed = true
      return state.writers
    }
    for writer in writers { writer.cancel(RPCError(code: .unavailable, message: "the coordinator went away")) }
  }
}
