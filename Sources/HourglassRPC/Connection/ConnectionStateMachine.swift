/// The life of one connection, from one side's point of view: the SETTINGS exchange, stream
/// admission and id rules, concurrency limits and the GOAWAY drain. A plain value; the
/// connection handler feeds it events and performs the actions it returns.
public struct ConnectionStateMachine: Sendable {
  /// Which end of the connection this machine tracks.
  public enum Role: Sendable { case client, server }

  /// Where the connection is.
  public enum State: Hashable, Sendable {
    /// Waiting for the peer's SETTINGS, which must be its first frame.
    case awaitingSettings
    /// Streams may be opened.
    case active
    /// A GOAWAY was sent or received: no new streams; close when the last stream ends.
    case draining
    /// Closed.
    case closed
  }

  /// The answer to a client opening a stream.
  public enum OpenStreamAction: Equatable, Sendable {
    /// Use this stream id.
    case open(streamID: UInt32)
    /// The peer's concurrency limit is reached: wait for a stream to close.
    case wait
    /// The connection accepts no new streams (GOAWAY, closed, or ids exhausted).
    case unavailable(String)
  }

  /// The answer to a server receiving HEADERS for a new stream.
  public enum AcceptStreamAction: Equatable, Sendable {
    /// Start the stream.
    case accept
    /// Refuse just this stream with RESET and this status (the connection stays up).
    case refuse(StatusCode, String)
  }

  /// The role.
  public let role: Role
  /// The state.
  public private(set) var state: State = .awaitingSettings
  /// What this side accepts (announced in its SETTINGS).
  public let localSettings: ConnectionSettings
  /// What the peer accepts; the defaults until its SETTINGS arrive.
  public private(set) var remoteSettings: ConnectionSettings = .defaults
  /// Streams open now (client: opened by this side; server: opened by the peer).
  public private(set) var openStreams = 0
  /// The highest stream id the peer has opened (server) or this side has used (client).
  public private(set) var highestStreamID: UInt32 = 0
  /// The last stream id the peer will still serve, once it sent GOAWAY.
  public private(set) var peerGoAwayLastStreamID: UInt32?
  /// The last stream id this side will still serve, once it sent GOAWAY.
  public private(set) var localGoAwayLastStreamID: UInt32?

  /// Creates the machine of a new connection.
  public init(role: Role, localSettings: ConnectionSettings) {
    self.role = role
    self.localSettings = localSettings
  }

  /// The peer's SETTINGS arrived.
  public mutating func receiveSettings(_ settings: ConnectionSettings) throws(ProtocolViolation) {
    guard state == .awaitingSettings else {
      throw ProtocolViolation(.unexpectedFrame, "SETTINGS may be sent only once, as the first frame")
    }
    try settings.validate()
    remoteSettings = settings
    state = .active
  }

  /// Any frame other than SETTINGS arrived; checks SETTINGS came first.
  public func checkFrameAllowed(_ type: FrameType) throws(ProtocolViolation) {
    if state == .awaitingSettings {
      throw ProtocolViolation(.unexpectedFrame, "the first frame must be SETTINGS, got \(type)")
    }
  }

  /// Client: open a stream.
  public mutating func openStream() -> OpenStreamAction {
    precondition(role == .client, "only clients open streams")
    switch state {
    case .draining, .closed:
      return .unavailable("the connection is going away")
    case .awaitingSettings, .active:
      break
    }
    guard openStreams < remoteSettings.maxConcurrentStreams else { return .wait }
    let next = highestStreamID == 0 ? 1 : highestStreamID + 2
    guard next <= Frame.maxStreamID else { return .unavailable("stream ids exhausted") }
    highestStreamID = next
    openStreams += 1
    return .open(streamID: next)
  }

  /// Server: HEADERS arrived for a stream id not seen before.
  public mutating func acceptStream(_ streamID: UInt32) throws(ProtocolViolation) -> AcceptStreamAction {
    precondition(role == .server, "only servers accept streams")
    try checkFrameAllowed(.headers)
    guard streamID % 2 == 1 else {
      throw ProtocolViolation(.badStreamID, "client stream ids must be odd, got \(streamID)")
    }
    guard streamID > highestStreamID else {
      throw ProtocolViolation(.badStreamID, "stream id \(streamID) is not above the last one opened (\(highestStreamID))")
    }
    highestStreamID = streamID
    if let last = localGoAwayLastStreamID, streamID > last {
      return .refuse(.unavailable, "the server is going away")
    }
    if state == .closed {
      return .refuse(.unavailable, "the connection is closing")
    }
    guard openStreams < localSettings.maxConcurrentStreams else {
      return .refuse(.resourceExhausted, "more than \(localSettings.maxConcurrentStreams) concurrent streams")
    }
    openStreams += 1
    return .accept
  }

  /// Whether `streamID` belongs to a stream the peer may still refer to (closed ones included).
  public func isKnownStream(_ streamID: UInt32) -> Bool {
    streamID % 2 == 1 && streamID <= highestStreamID
  }

  /// A stream closed. Returns true when the connection should now close (drained).
  public mutating func streamClosed() -> Bool {
    precondition(openStreams > 0, "closing more streams than were open")
    openStreams -= 1
    return state == .draining && openStreams == 0
  }

  /// This side starts a graceful drain. Returns the last stream id it will still serve, or
  /// `nil` when a GOAWAY was already sent.
  public mutating func sendGoAway() -> UInt32? {
    guard localGoAwayLastStreamID == nil, state != .closed else { return nil }
    let last = role == .server ? highestStreamID : 0
    localGoAwayLastStreamID = last
    state = .draining
    return last
  }

  /// The peer sent GOAWAY. Returns true when the connection can close now.
  public mutating func receiveGoAway(lastStreamID: UInt32) -> Bool {
    peerGoAwayLastStreamID = min(lastStreamID, peerGoAwayLastStreamID ?? .max)
    if state != .closed { state = .draining }
    return openStreams == 0
  }

  /// The connection closed.
  public mutating func close() {
    state = .closed
  }
}
