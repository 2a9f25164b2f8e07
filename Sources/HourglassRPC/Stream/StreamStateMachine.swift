import NIOCore

/// The life of one stream, from one side's point of view: which frames may be sent and
/// received, message reassembly, size limits and message credits. A plain value: the
/// connection handler feeds it events and performs the actions it returns.
///
/// ```
///            client sends HEADERS / server receives HEADERS
///   idle ───────────────────────────────────────────────▶ open
///   open ── local END_STREAM ──▶ halfClosedLocal ── TRAILERS ──▶ closed
///   open ── remote END_STREAM ─▶ halfClosedRemote ── TRAILERS ─▶ closed
///   any  ── RESET (either way), deadline ─────────────────────▶ closed
/// ```
/// Only the server sends TRAILERS; they close the stream for both sides.
public struct StreamStateMachine: Sendable {
  /// Which end of the stream this machine tracks.
  public enum Role: Sendable { case client, server }

  /// Where the stream is.
  public enum State: Hashable, Sendable {
    /// The server has received HEADERS / the client has sent them; both directions open.
    case open
    /// This side sent END_STREAM; it may still receive.
    case halfClosedLocal
    /// The peer sent END_STREAM; this side may still send.
    case halfClosedRemote
    /// Nothing more flows.
    case closed
  }

  /// What the caller must do after a received MESSAGE frame.
  public enum ReceiveMessageAction: Equatable, Sendable {
    /// A fragment was buffered; wait for more.
    case none
    /// A whole message arrived; `endStream` when the peer half-closed with it.
    case deliver(ByteBuffer, endStream: Bool)
    /// The peer half-closed with an empty END_STREAM frame.
    case endOfMessages
  }

  /// The role.
  public let role: Role
  /// The state.
  public private(set) var state: State = .open
  /// Messages this side may still send before the peer grants more.
  public private(set) var sendCredit: Int
  /// Messages the peer may still send before this side grants more.
  public private(set) var receiveCredit: Int
  /// Whether the server has sent (or the client received) response HEADERS.
  public private(set) var responseHeadersSeen = false
  private var partial: ByteBuffer?

  /// Bytes received of a message not yet complete (its MESSAGE frames so far had MORE).
  public var unfinishedBytes: Int { partial?.readableBytes ?? 0 }
  private let maxMessageSize: Int

  /// Creates an open stream.
  /// - Parameters:
  ///   - sendCredit: the peer's initial stream credit.
  ///   - receiveCredit: this side's initial stream credit.
  ///   - maxMessageSize: this side's maximum message size.
  public init(role: Role, sendCredit: Int, receiveCredit: Int, maxMessageSize: Int) {
    self.role = role
    self.sendCredit = sendCredit
    self.receiveCredit = receiveCredit
    self.maxMessageSize = maxMessageSize
  }

  private var canReceive: Bool { state == .open || state == .halfClosedLocal }
  private var canSend: Bool { state == .open || state == .halfClosedRemote }

  // MARK: Receiving

  /// A MESSAGE frame arrived.
  public mutating func receiveMessage(_ payload: ByteBuffer, flags: FrameFlags) throws(ProtocolViolation) -> ReceiveMessageAction {
    guard canReceive else {
      throw ProtocolViolation(.unexpectedFrame, "MESSAGE on a stream the peer already ended")
    }
    if role == .client, !responseHeadersSeen {
      // Response headers are optional; the first message implies empty ones.
      responseHeadersSeen = true
    }
    // END_STREAM is the client's flag: on a server's MESSAGE it is ignored, as unexpected flags
    // are (the server ends a stream with TRAILERS).
    let endStream = role == .server && flags.contains(.endStream)
    if flags.contains(.more), endStream {
      throw ProtocolViolation(.malformedFrame, "MESSAGE with both MORE and END_STREAM")
    }
    if partial == nil {
      if endStream, payload.readableBytes == 0, !flags.contains(.more) {
        // An empty frame with END_STREAM only half-closes (an empty message needs a frame without it).
        closeRemote()
        return .endOfMessages
      }
      guard receiveCredit > 0 else {
        throw ProtocolViolation(.creditExceeded, "a message was sent without message credit")
      }
      receiveCredit -= 1
    }
    let size = (partial?.readableBytes ?? 0) + payload.readableBytes
    guard size <= maxMessageSize else {
      partial = nil
      throw ProtocolViolation(.messageTooLarge, "message of at least \(size) bytes exceeds the maximum message size of \(maxMessageSize)")
    }
    if flags.contains(.more) {
      if partial == nil {
        partial = payload
      } else {
        var incoming = payload
        partial!.writeBuffer(&incoming)
      }
      return .none
    }
    var message: ByteBuffer
    if var assembled = partial {
      var incoming = payload
      assembled.writeBuffer(&incoming)
      message = assembled
      partial = nil
    } else {
      message = payload
    }
    if endStream { closeRemote() }
    return .deliver(message, endStream: endStream)
  }

  /// The peer half-closed without a message (END_STREAM on its HEADERS).
  public mutating func receiveEndStream() {
    closeRemote()
  }

  /// A HEADERS frame arrived on an open stream (the client's view of response headers).
  public mutating func receiveResponseHeaders() throws(ProtocolViolation) {
    guard role == .client else {
      throw ProtocolViolation(.unexpectedFrame, "a second HEADERS frame on stream")
    }
    guard canReceive, !responseHeadersSeen else {
      throw ProtocolViolation(.unexpectedFrame, "response HEADERS after the first message or twice")
    }
    responseHeadersSeen = true
  }

  /// TRAILERS arrived (client side only).
  public mutating func receiveTrailers() throws(ProtocolViolation) {
    guard role == .client else {
      throw ProtocolViolation(.unexpectedFrame, "TRAILERS sent by a client")
    }
    guard canReceive else {
      throw ProtocolViolation(.unexpectedFrame, "TRAILERS on a closed stream")
    }
    guard partial == nil else {
      throw ProtocolViolation(.malformedFrame, "TRAILERS in the middle of a fragmented message")
    }
    state = .closed
  }

  /// CREDIT arrived: the peer accepts `count` more messages.
  public mutating func receiveCredit(_ count: Int) throws(ProtocolViolation) {
    guard count > 0 else { throw ProtocolViolation(.malformedFrame, "CREDIT of zero") }
    let (sum, overflow) = sendCredit.addingReportingOverflow(count)
    guard !overflow, sum <= Int(Int32.max) else {
      throw ProtocolViolation(.malformedFrame, "CREDIT overflows the stream's window")
    }
    sendCredit = sum
  }

  /// RESET arrived, or a local reset was sent: the stream is gone.
  public mutating func reset() {
    state = .closed
    partial = nil
  }

  // MARK: Sending

  /// This side wants to send a message; returns false when it must wait for credit.
  public mutating func sendMessage(endStream: Bool) throws(ProtocolViolation) -> Bool {
    guard canSend else {
      throw ProtocolViolation(.unexpectedFrame, "sending on a stream this side already ended")
    }
    guard sendCredit > 0 else { return false }
    sendCredit -= 1
    if role == .server { responseHeadersSeen = true }
    if endStream { closeLocal() }
    return true
  }

  /// This side half-closes without a message.
  public mutating func sendEndStream() throws(ProtocolViolation) {
    guard canSend else {
      throw ProtocolViolation(.unexpectedFrame, "ending a stream this side already ended")
    }
    closeLocal()
  }

  /// The server sends response HEADERS.
  public mutating func sendResponseHeaders() throws(ProtocolViolation) {
    guard role == .server, canSend, !responseHeadersSeen else {
      throw ProtocolViolation(.unexpectedFrame, "response HEADERS after a message or twice")
    }
    responseHeadersSeen = true
  }

  /// The server sends TRAILERS: the stream closes for both sides.
  public mutating func sendTrailers() throws(ProtocolViolation) {
    guard role == .server, state != .closed else {
      throw ProtocolViolation(.unexpectedFrame, "TRAILERS on a closed stream or from a client")
    }
    state = .closed
    partial = nil
  }

  /// The local consumer took messages: the peer may send `count` more.
  public mutating func grantReceiveCredit(_ count: Int) {
    receiveCredit += count
  }

  private mutating func closeLocal() {
    switch state {
    case .open: state = .halfClosedLocal
    case .halfClosedRemote: state = .closed
    case .halfClosedLocal, .closed: break
    }
  }

  private mutating func closeRemote() {
    switch state {
    case .open: state = .halfClosedRemote
    case .halfClosedLocal: state = .closed
    case .halfClosedRemote, .closed: break
    }
  }
}
