import NIOCore
import NIOPosix

/// Where each benchmark connection's two ends run: the same event loops, in the same order, for
/// the bare ceiling and the RPC rows, so that a ratio compares paths rather than placements.
///
/// Left to NIO's shared round robin, a connection's client and server ends landed on the same
/// thread or on two threads depending on how many loops had been handed out before, and the
/// RPC rows changed by a quarter from one round to the next with it. A server accepts on the
/// next loop of its group, which cannot be chosen: the client end is opened on the loop the
/// placement asks for, and a connection whose server end landed elsewhere is opened again.
enum Placement: String, CaseIterable, Sendable {
  /// Each connection's client and server ends on different threads, as two processes on two
  /// cores would be.
  case cross
  /// Both ends of each connection on one thread; connections spread over the threads.
  case same

  /// The indexes in ``sharedLoops`` of connection `index`'s client and server ends.
  func loops(ofConnection index: Int) -> (client: Int, server: Int) {
    let count = sharedLoops.count
    switch self {
    case .cross: return (index % count, (index + 1) % count)
    case .same: return (index % count, index % count)
    }
  }
}

/// The loops of the shared event-loop group, in order.
let sharedLoops: [any EventLoop] = {
  var loops: [any EventLoop] = []
  for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() { loops.append(loop) }
  return loops
}()

/// The index in ``sharedLoops`` of the loop running the caller, if it is one of them.
func currentSharedLoopIndex() -> Int? {
  guard let current = MultiThreadedEventLoopGroup.currentEventLoop else { return nil }
  return sharedLoops.firstIndex { $0 === current }
}

/// Opens connection `index` with its ends where `placement` says. `open` opens one from the
/// client loop it is given and tells the shared loop its server end landed on; one that landed
/// elsewhere is closed with `discard` and opened again, since the server's next accept goes to
/// its next loop. With no placement, the first one is kept wherever it landed.
func placedConnection<Connection>(
  _ index: Int, _ placement: Placement?,
  open: (_ clientLoop: any EventLoopGroup) async throws -> (connection: Connection, serverLoop: Int?),
  discard: (Connection) async -> Void
) async throws -> Connection {
  let wanted = placement?.loops(ofConnection: index)
  for _ in 0..<(2 * sharedLoops.count) {
    let opened = try await open(wanted.map { sharedLoops[$0.client] } ?? MultiThreadedEventLoopGroup.singleton)
    guard let wanted, opened.serverLoop != wanted.server else { return opened.connection }
    await discard(opened.connection)
  }
  throw PlacementError(connection: index)
}

/// A connection could not be opened with its ends on the loops its placement asks for.
struct PlacementError: Error, CustomStringConvertible {
  var connection: Int
  var description: String { "connection \(connection) could not be placed on the loops asked for" }
}
