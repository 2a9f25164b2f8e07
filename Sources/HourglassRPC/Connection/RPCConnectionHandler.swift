import DequeModule
import Foundation
import Logging
import NIOCore
import SwiftProtobuf

/// Runs `hourglass/1` on one channel: feeds frames to the connection and stream state
/// machines, bridges streams to async code, and enforces deadlines, keepalive and limits.
///
/// It sits right after TLS in the pipeline and reads and writes bytes: it splits what it reads
/// into frames itself (with a ``FrameDecoder``), and encodes the frames it sends itself (the
/// client's preface first), gathering every frame written before a flush into one buffer, so
/// that a frame costs neither a trip through the pipeline nor a TLS record of its own. All its
/// state is confined to the channel's event loop; async code reaches it through
/// ``ClientStreamWriter`` and ``ServerStreamWriter`` values that hop onto the loop (or call
/// straight in when they already run on it).
public final class RPCConnectionHandler: ChannelInboundHandler {
  public typealias InboundIn = ByteBuffer
  public typealias OutboundOut = ByteBuffer

  /// The most bytes of unfinished messages (fragments received with MORE, not yet complete)
  /// one connection may hold across its streams; more is a connection error, RESOURCE_EXHAUSTED.
  /// Without it a peer could hold `max_concurrent_streams × max_message_size` (4 GiB at the
  /// defaults) half-sent. A sender writes each message's frames together, so a well-behaved
  /// peer holds about one message here at a time.
  public static let unfinishedMessageBudget = 64 << 20

  /// The most bytes written to a connection since it stopped taking writes (its peer is not
  /// reading them fast enough): past it the peer is taken to have stopped reading, and the
  /// connection is closed rather than let its output queue grow without end.
  public static let unreadOutputBudget = 32 << 20

  /// Timers and limits of a connection.
  public struct Configuration: Sendable {
    /// What this side announces in its SETTINGS.
    public var settings: ConnectionSettings
    /// How long the peer has to send its SETTINGS after the handler starts.
    public var settingsTimeout: TimeAmount
    /// Ping a connection that has been quiet this long; `nil` disables keepalive.
    public var keepaliveInterval: TimeAmount?
    /// Close the connection when a PING is not answered within this time.
    public var keepaliveTimeout: TimeAmount
    /// Close (with GOAWAY) a connection with no open stream for this long; `nil` never.
    public var idleTimeout: TimeAmount?

    /// Defaults: 64 KiB frames, 4 MiB messages, 1024 streams, 64 credits, 10 s to send
    /// SETTINGS, keepalive every 30 s with a 10 s timeout, no idle timeout.
    public static var defaults: Configuration {
      Configuration(
        settings: .defaults,
        settingsTimeout: .seconds(10),
        keepaliveInterval: .seconds(30),
        keepaliveTimeout: .seconds(10),
        idleTimeout: nil
      )
    }

    /// Creates a configuration.
    public init(
      settings: ConnectionSettings, settingsTimeout: TimeAmount, keepaliveInterval: TimeAmount?, keepaliveTimeout: TimeAmount, idleTimeout: TimeAmount?
    ) {
      self.settings = settings
      self.settingsTimeout = settingsTimeout
      self.keepaliveInterval = keepaliveInterval
      self.keepaliveTimeout = keepaliveTimeout
      self.idleTimeout = idleTimeout
    }
  }

  private struct PendingOpen {
    enum Caller {
      /// A streaming call, handed its stream once open.
      case stream(EventLoopPromise<RPCClientStream>)
      /// A unary call, which waits for its outcome instead.
      case unary(UnaryCall)

      /// Fails a call before its stream opened.
      func fail(_ error: RPCError) {
        switch self {
        case .stream(let promise): promise.fail(error)
        case .unary(let call): call.failBeforeStart(error)
        }
      }
    }

    var head: RequestHead
    var firstMessage: ByteBuffer?
    var endStream: Bool
    var caller: Caller
    /// For a call with a deadline: when it was queued (its HEADERS carry the time left from
    /// then), a number naming it, and the timer that fails it if it is still waiting then.
    var queued: (at: NIODeadline, serial: UInt64, expiry: Scheduled<Void>)?

    /// Fails a call before its stream opened.
    func fail(_ error: RPCError) {
      queued?.expiry.cancel()
      caller.fail(error)
    }
  }

  // The mutable state below is touched only on the connection's event loop, and never passed
  // `inout` to code that could reach it again: its dynamic exclusivity checks (a thread-local
  // look-up and a set insertion per access, ~2% of a small call's CPU) are turned off.
  @exclusivity(unchecked) private var connection: ConnectionStateMachine
  private let configuration: Configuration
  private let logger: Logger
  private let peer: PeerIdentity?
  private let onStream: (@Sendable (consuming RPCServerStream) -> Void)?
  private let onClose: (@Sendable () -> Void)?
  @exclusivity(unchecked) private var streams = StreamTable<StreamBox>()
  @exclusivity(unchecked) private var pendingOpens = Deque<PendingOpen>()
  /// Numbers the queued calls with a deadline (``PendingOpen/queued``).
  private var pendingSerial: UInt64 = 0
  @exclusivity(unchecked) private var requestHeadersCache: [String: ByteBuffer] = [:]
  @exclusivity(unchecked) private var lastRequestHeaders: (payload: ByteBuffer, decoded: DecodedRequestHeaders)?

  private struct DecodedRequestHeaders {
    var method: String
    var metadata: Metadata
    var timeoutMicros: UInt64
  }
  @exclusivity(unchecked) private var context: ChannelHandlerContext?
  /// Splits the bytes read into frames.
  private let frames: NIOSingleStepByteToMessageProcessor<FrameDecoder>
  /// Reads that arrived while frames were being handled (a re-entrant `channelRead`).
  @exclusivity(unchecked) private var deferredReads: [ByteBuffer] = []
  @exclusivity(unchecked) private var decoding = false
  /// A server's request HEADERS, held back until the next frame is decoded: when that frame
  /// is the call's one and last request message, the handler gets the request with the
  /// stream and no queue is needed.
  @exclusivity(unchecked) private var heldHeaders: Frame?
  /// The writers' way back to this handler, shared by all the streams of the connection.
  @exclusivity(unchecked) private var streamWriterCore: NIOStreamWriter.Core?
  /// Frames encoded since the last flush.
  @exclusivity(unchecked) private var gathered: ByteBuffer?
  @exclusivity(unchecked) private var needsFlush = false
  @exclusivity(unchecked) private var flushScheduled = false
  @exclusivity(unchecked) private var inRead = false
  @exclusivity(unchecked) private var settingsTimer: Scheduled<Void>?
  @exclusivity(unchecked) private var keepaliveTimer: Scheduled<Void>?
  @exclusivity(unchecked) private var keepaliveDeadline: Scheduled<Void>?
  @exclusivity(unchecked) private var idleTimer: Scheduled<Void>?
  @exclusivity(unchecked) private var readSinceLastKeepalive = false
  @exclusivity(unchecked) private var outstandingPing: UInt64?
  @exclusivity(unchecked) private var closed = false
  /// Whether the channel takes writes without queueing past its high-water mark, and the bytes
  /// written since it last did not.
  @exclusivity(unchecked) private var writable = true
  @exclusivity(unchecked) private var writtenWhileUnwritable = 0

  /// Creates the server side of a connection; `onStream` is called (on the event loop) for
  /// every accepted stream.
  public init(
    serverWith configuration: Configuration, peer: PeerIdentity?, logger: Logger, onStream: @escaping @Sendable (consuming RPCServerStream) -> Void,
    onClose: (@Sendable () -> Void)? = nil
  ) {
    self.connection = ConnectionStateMachine(role: .server, localSettings: configuration.settings)
    self.configuration = configuration
    self.frames = NIOSingleStepByteToMessageProcessor(FrameDecoder(maxFrameSize: configuration.settings.maxFrameSize, expectPreface: true))
    self.peer = peer
    self.logger = logger
    self.onStream = onStream
    self.onClose = onClose
  }

  /// Creates the client side of a connection.
  public init(clientWith configuration: Configuration, logger: Logger, onClose: (@Sendable () -> Void)? = nil) {
    self.connection = ConnectionStateMachine(role: .client, localSettings: configuration.settings)
    self.configuration = configuration
    self.frames = NIOSingleStepByteToMessageProcessor(FrameDecoder(maxFrameSize: configuration.settings.maxFrameSize, expectPreface: false))
    self.peer = nil
    self.logger = logger
    self.onStream = nil
    self.onClose = onClose
  }

  private var isServer: Bool { connection.role == .server }

  // MARK: Lifecycle

  public func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    self.streamWriterCore = NIOStreamWriter.Core(handler: self, loop: context.eventLoop)
    if context.channel.isActive { start(context: context) }
  }

  public func channelActive(context: ChannelHandlerContext) {
    start(context: context)
    context.fireChannelActive()
  }

  @exclusivity(unchecked) private var started = false

  private func start(context: ChannelHandlerContext) {
    guard !started else { return }
    started = true
    var announced = configuration.settings
    announced.keepaliveInterval = configuration.keepaliveInterval
    if !isServer {
      var preface = context.channel.allocator.buffer(capacity: 1024)
      preface.writeBytes(ConnectionPreface.bytes)
      gathered = preface
    }
    write(Frame(type: .settings, streamID: 0, payload: serialize(announced.wire, context.channel.allocator)))
    flushIfNeeded()
    // The timers hold the handler strongly and `tearDown` cancels them all: a weak reference
    // would give the handler a side table, and every retain and release of it (several per
    // call) would take the runtime's slow path.
    let settingsTimeout = configuration.settingsTimeout
    settingsTimer = context.eventLoop.assumeIsolated().scheduleTask(in: settingsTimeout) { [self] in
      connectionError(ProtocolViolation(.settingsTimeout, "no SETTINGS from the peer within \(settingsTimeout)"))
    }
    scheduleKeepalive()
    armIdleTimer()
  }

  public func channelInactive(context: ChannelHandlerContext) {
    tearDown(RPCError(code: .unavailable, message: "the connection closed"))
    context.fireChannelInactive()
  }

  public func channelWritabilityChanged(context: ChannelHandlerContext) {
    writable = context.channel.isWritable
    if writable { writtenWhileUnwritable = 0 }
    context.fireChannelWritabilityChanged()
  }

  public func handlerRemoved(context: ChannelHandlerContext) {
    tearDown(RPCError(code: .unavailable, message: "the connection closed"))
    self.context = nil
    self.streamWriterCore = nil
    gathered = nil
  }

  public func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if let violation = error as? ProtocolViolation {
      connectionError(violation)
    } else {
      logger.debug("connection error", metadata: ["hourglass.error": "\(error)"])
      tearDown(RPCError(code: .unavailable, message: "connection error: \(error)", cause: error))
      context.close(promise: nil)
    }
  }

  public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is GracefulShutdownEvent {
      startGracefulShutdown()
    } else {
      context.fireUserInboundEventTriggered(event)
    }
  }

  // MARK: Reading

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let bytes = unwrapInboundIn(data)
    guard !closed else { return }
    readSinceLastKeepalive = true
    inRead = true
    guard !decoding else {
      deferredReads.append(bytes)
      return
    }
    decoding = true
    defer { decoding = false }
    var next: ByteBuffer? = bytes
    while let input = next {
      do {
        try frames.process(buffer: input) { frame in try self.received(frame) }
        if let held = heldHeaders {
          heldHeaders = nil
          try handle(held)
        }
      } catch let violation as ProtocolViolation {
        deferredReads.removeAll()
        connectionError(handlingHeldHeadersFirst(then: violation))
        return
      } catch {
        deferredReads.removeAll()
        connectionError(handlingHeldHeadersFirst(then: ProtocolViolation(.malformedFrame, "cannot decode frames: \(error)")))
        return
      }
      next = deferredReads.isEmpty ? nil : deferredReads.removeFirst()
    }
  }

  /// The violation to report when decoding failed after request HEADERS were held: those
  /// HEADERS arrived first, so they are handled first, and their own violation, if any, is the
  /// one reported. Without this, how the bytes happened to be split across reads would decide
  /// which error the peer is told (found by the fuzz target).
  private func handlingHeldHeadersFirst(then violation: ProtocolViolation) -> ProtocolViolation {
    guard let held = heldHeaders else { return violation }
    heldHeaders = nil
    do {
      try handle(held)
    } catch let earlier {
      return earlier
    }
    return violation
  }

  /// One decoded frame. A server's request HEADERS wait for the next frame, so that a unary
  /// call (HEADERS, then one MESSAGE with END_STREAM, usually in the same read) reaches its
  /// handler with its request.
  private func received(_ frame: Frame) throws(ProtocolViolation) {
    guard !closed else { return }
    if let held = heldHeaders {
      heldHeaders = nil
      if frame.type == .message, frame.streamID == held.streamID, frame.flags == .endStream, frame.payload.readableBytes > 0,
        frame.payload.readableBytes <= configuration.settings.maxMessageSize, configuration.settings.initialStreamCredit > 0
      {
        try connection.checkFrameAllowed(.headers)
        try receiveHeaders(held, request: frame)
        return
      }
      try handle(held)
    }
    if isServer, frame.type == .headers, !frame.flags.contains(.endStream), connection.state != .awaitingSettings, streams[frame.streamID] == nil {
      heldHeaders = frame
      return
    }
    try handle(frame)
  }

  public func channelReadComplete(context: ChannelHandlerContext) {
    inRead = false
    flushIfNeeded()
    context.fireChannelReadComplete()
  }

  private func handle(_ frame: Frame) throws(ProtocolViolation) {
    if frame.type == .settings {
      guard frame.streamID == 0 else { throw ProtocolViolation(.badStreamID, "SETTINGS on stream \(frame.streamID)") }
      let wire: WireSettings = try decode(frame.payload, "SETTINGS")
      try connection.receiveSettings(ConnectionSettings(wire: wire))
      settingsTimer?.cancel()
      settingsTimer = nil
      openPendingStreams()
      return
    }
    try connection.checkFrameAllowed(frame.type)
    switch frame.type {
    case .headers: try receiveHeaders(frame, request: nil)
    case .message: try receiveMessage(frame)
    case .trailers: try receiveTrailers(frame)
    case .reset: try receiveReset(frame)
    case .credit: try receiveCredit(frame)
    case .ping:
      guard frame.streamID == 0, frame.payload.readableBytes == 8 else {
        throw ProtocolViolation(.malformedFrame, "PING must be on stream 0 with 8 bytes of payload")
      }
      write(Frame(type: .pong, streamID: 0, payload: frame.payload))
    case .pong:
      // Ends the wait for a keepalive answer; any other PONG, well-formed or not, is ignored
      // (docs/protocol.md, 16.3).
      if frame.streamID == 0, frame.payload.readableBytes == 8, let expected = outstandingPing,
        frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt64.self) == expected
      {
        outstandingPing = nil
        keepaliveDeadline?.cancel()
        keepaliveDeadline = nil
      }
    case .goAway: try receiveGoAway(frame)
    default:
      break  // Unknown frame types are ignored (forward compatibility).
    }
  }

  /// HEADERS; on the server, `request` is the MESSAGE frame that followed them when it carries
  /// the call's whole and only request (a unary or server-streaming call).
  private func receiveHeaders(_ frame: Frame, request: Frame?) throws(ProtocolViolation) {
    if let box = streams[frame.streamID] {
      // Response headers on a client stream.
      try box.machine.receiveResponseHeaders()
      let wire: WireResponseHeaders = try decode(frame.payload, "HEADERS")
      let metadata = Metadata(wire: wire.metadata)
      box.client?.yield(.headers(metadata))
      box.unary?.headers = metadata
      return
    }
    guard isServer else {
      if connection.isKnownStream(frame.streamID) { return }  // a stream this side already reset
      throw ProtocolViolation(.badStreamID, "HEADERS for unknown stream \(frame.streamID)")
    }
    let wire = try decodeRequestHeaders(frame.payload)
    switch try connection.acceptStream(frame.streamID) {
    case .refuse(let code, let message):
      writeReset(frame.streamID, code: code, message: message)
      if let request { try receiveMessage(request) }  // a late frame now
      return
    case .accept:
      break
    }
    guard wire.method.hasPrefix("/") else {
      _ = connection.streamClosed()
      writeReset(frame.streamID, code: .invalidArgument, message: "method must be a path like /package.Service/Method")
      if let request { try receiveMessage(request) }
      return
    }
    var machine = StreamStateMachine(
      role: .server,
      sendCredit: connection.remoteSettings.initialStreamCredit,
      receiveCredit: configuration.settings.initialStreamCredit,
      maxMessageSize: configuration.settings.maxMessageSize
    )
    let inbound: InboundQueue<ByteBuffer>?
    let requests: RPCInbound<ByteBuffer>
    if let request {
      // The whole request is here: the caller checked the frame can only be delivered.
      guard case .deliver(let message, endStream: true) = try machine.receiveMessage(request.payload, flags: request.flags) else {
        preconditionFailure("a lone END_STREAM MESSAGE within the limits must be delivered")
      }
      inbound = nil
      requests = RPCInbound(single: message)
    } else {
      let queue = InboundQueue<ByteBuffer>()
      inbound = queue
      requests = RPCInbound(queue, creditReturn: makeCreditReturn(frame.streamID))
    }
    // The box is also the stream's termination signal: one object per call.
    let box = StreamBox(machine: consume machine, serverInbound: inbound)
    streams[frame.streamID] = box
    idleTimer?.cancel()
    let timeout: Duration? = wire.timeoutMicros == 0 ? nil : .microseconds(Int64(clamping: wire.timeoutMicros))
    if wire.timeoutMicros > 0, let context {
      let streamID = frame.streamID
      box.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: .microseconds(Int64(clamping: wire.timeoutMicros))) { [self] in
        serverDeadlineExpired(streamID)
      }
    }
    let stream = RPCServerStream(
      head: RequestHead(method: wire.method, metadata: wire.metadata, timeout: timeout),
      peer: peer,
      inbound: consume requests,
      writer: NIOStreamWriter(core: streamWriterCore!, streamID: frame.streamID),
      termination: box
    )
    if frame.flags.contains(.endStream) {
      box.machine.receiveEndStream()
      inbound?.finish()
    }
    onStream?(consume stream)
  }

  /// Decodes a request's HEADERS; the payload of the previous one is remembered, since a
  /// client calling one method over and over sends the same bytes every time.
  private func decodeRequestHeaders(_ payload: ByteBuffer) throws(ProtocolViolation) -> DecodedRequestHeaders {
    // Compared in place: binding the remembered pair to a name copies (retains) its parts.
    if lastRequestHeaders?.payload == payload, let decoded = lastRequestHeaders?.decoded { return decoded }
    let wire: WireRequestHeaders = try decode(payload, "HEADERS")
    let decoded = DecodedRequestHeaders(method: wire.method, metadata: Metadata(wire: wire.metadata), timeoutMicros: wire.timeoutMicros)
    if payload.readableBytes <= 256 {
      // A copy: a slice would keep the whole read buffer alive.
      lastRequestHeaders = (ByteBuffer(bytes: payload.readableBytesView), decoded)
    }
    return decoded
  }

  private func receiveMessage(_ frame: Frame) throws(ProtocolViolation) {
    guard let box = streams[frame.streamID] else {
      try checkLateFrame(frame)
      return
    }
    let action: StreamStateMachine.ReceiveMessageAction
    do {
      action = try box.machine.receiveMessage(frame.payload, flags: frame.flags)
    } catch {
      streamError(frame.streamID, error)
      return
    }
    switch action {
    case .none:
      // A fragment held: the connection's total is checked at every one. Only messages larger
      // than a frame come here, and each check costs a pass over the open streams, little
      // beside copying the fragment. (Checking only past a megabyte on one stream let a peer
      // hold just under a megabyte on each of a thousand streams.)
      let total = streams.reduce(0) { $0 + $1.1.machine.unfinishedBytes }
      guard total <= Self.unfinishedMessageBudget else {
        throw ProtocolViolation(
          .unfinishedMessagesTooLarge,
          "\(total) bytes of unfinished messages on this connection exceed the limit of \(Self.unfinishedMessageBudget)")
      }
    case .deliver(let message, let endStream):
      if box.isServerStream {
        box.serverInbound?.yield(message)
        if endStream { box.serverInbound?.finish() }
      } else if let call = box.unary {
        call.receive(message)
      } else {
        box.client?.yield(.message(message))
      }
    case .endOfMessages:
      box.serverInbound?.finish()
    }
  }

  private func receiveTrailers(_ frame: Frame) throws(ProtocolViolation) {
    guard let box = streams[frame.streamID] else {
      try checkLateFrame(frame)
      return
    }
    try box.machine.receiveTrailers()
    let status: Status
    let metadata: Metadata
    if frame.payload.readableBytes == 0 {
      // Every field at its default, as a successful call usually ends: OK, no metadata.
      status = Status(code: .ok, message: "")
      metadata = Metadata()
    } else {
      let wire: WireTrailers = try decode(frame.payload, "TRAILERS")
      status = Status(code: StatusCode(rawValue: wire.code) ?? .unknown, message: wire.message)
      metadata = Metadata(wire: wire.metadata)
    }
    box.client?.yield(.trailers(status, metadata))
    box.client?.finish()
    box.unary?.complete(status: status, trailers: metadata)
    removeStream(frame.streamID)
  }

  private func receiveReset(_ frame: Frame) throws(ProtocolViolation) {
    guard let box = streams[frame.streamID] else {
      try checkLateFrame(frame)
      return
    }
    let wire: WireReset = try decode(frame.payload, "RESET")
    // A RESET always reports a failure: a code of OK (or a missing one) reads as UNKNOWN.
    let code = StatusCode(rawValue: wire.code).flatMap { $0 == .ok ? nil : $0 } ?? .unknown
    box.machine.reset()
    let error = RPCError(code: code, message: wire.message.isEmpty ? "the peer reset the stream" : wire.message)
    fail(box, error, reason: .reset(code))
    removeStream(frame.streamID)
  }

  private func receiveCredit(_ frame: Frame) throws(ProtocolViolation) {
    guard frame.payload.readableBytes == 4, let count = frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt32.self) else {
      throw ProtocolViolation(.malformedFrame, "CREDIT payload must be 4 bytes")
    }
    guard let box = streams[frame.streamID] else {
      try checkLateFrame(frame)
      return
    }
    do {
      try box.machine.receiveCredit(Int(count))
    } catch {
      streamError(frame.streamID, error)
      return
    }
    drainWaitingWrites(frame.streamID, box)
  }

  private func receiveGoAway(_ frame: Frame) throws(ProtocolViolation) {
    guard frame.streamID == 0 else { throw ProtocolViolation(.badStreamID, "GOAWAY on stream \(frame.streamID)") }
    let wire: WireGoAway = try decode(frame.payload, "GOAWAY")
    let closeNow = connection.receiveGoAway(lastStreamID: wire.lastStreamID)
    logger.debug("received GOAWAY", metadata: ["hourglass.last_stream_id": "\(wire.lastStreamID)", "hourglass.reason": "\(wire.message)"])
    // Streams the peer will never serve fail now, safely retryable.
    for (id, box) in streams where id > wire.lastStreamID && !isServer {
      box.machine.reset()
      fail(box, RPCError(code: .unavailable, message: "the server is going away and did not start this call"), reason: .connectionClosed)
      removeStream(id)
    }
    for pending in pendingOpens {
      pending.fail(RPCError(code: .unavailable, message: "the server is going away"))
    }
    pendingOpens.removeAll()
    if closeNow || connection.openStreams == 0 { closeConnection() }
  }

  /// A frame for a stream that is not open: fine for one this side closed (a race), an error
  /// for one that was never opened.
  private func checkLateFrame(_ frame: Frame) throws(ProtocolViolation) {
    guard frame.streamID != 0 else {
      throw ProtocolViolation(.badStreamID, "\(frame.type) on stream 0")
    }
    guard connection.isKnownStream(frame.streamID) else {
      throw ProtocolViolation(.badStreamID, "\(frame.type) for stream \(frame.streamID), which was never opened")
    }
  }

  // MARK: Writing (on the event loop)

  private func write(_ frame: Frame) {
    write(frame.type, flags: frame.flags, streamID: frame.streamID, payload: frame.payload)
  }

  /// Writes a frame given by its parts: the frames of every call are written this way, without
  /// a `Frame` value that would hold (retain) its payload on the way; a nil payload is empty.
  private func write(_ type: FrameType, flags: FrameFlags = [], streamID: UInt32, payload: ByteBuffer?) {
    // The context is only compared here, not bound: binding it would retain it for every frame.
    guard context != nil, !closed || type == .goAway else { return }
    // Taken out of the property while it is written to: one checked access to the property
    // each way instead of one per piece of the frame (the buffer stays uniquely referenced).
    var buffer =
      gathered.take()
      ?? context!.channel.allocator.buffer(capacity: max(1024, Frame.headerSize + (payload?.readableBytes ?? 0)))
    FrameEncoderHandler.write(type, flags: flags, streamID: streamID, payload: payload, into: &buffer)
    needsFlush = true
    if !writable { countUnread(Frame.headerSize + (payload?.readableBytes ?? 0)) }
    if buffer.readableBytes >= FrameEncoderHandler.gatherLimit {
      // A large message: pass on what is gathered now rather than let the buffer grow.
      context!.write(wrapOutboundOut(buffer), promise: nil)
    } else {
      gathered = buffer
    }
  }

  /// Counts output queued while the channel takes no more; past ``unreadOutputBudget`` the
  /// connection is closed (once, after the write under way).
  private func countUnread(_ bytes: Int) {
    let before = writtenWhileUnwritable
    writtenWhileUnwritable += bytes
    guard before <= Self.unreadOutputBudget, writtenWhileUnwritable > Self.unreadOutputBudget, let context else { return }
    context.eventLoop.assumeIsolated().execute { [self] in
      guard !closed, !writable else { return }
      logger.info(
        "closing a connection whose peer stopped reading",
        metadata: ["hourglass.unread_bytes": "\(writtenWhileUnwritable)", "hourglass.budget": "\(Self.unreadOutputBudget)"])
      tearDown(RPCError(code: .unavailable, message: "the peer stopped reading: more than \(Self.unreadOutputBudget) bytes of output queued"))
      self.context?.close(promise: nil)
    }
  }

  private func flushIfNeeded() {
    guard needsFlush, let context else { return }
    needsFlush = false
    if let buffer = gathered {
      gathered = nil
      context.write(wrapOutboundOut(buffer), promise: nil)
    }
    context.flush()
  }

  /// Flushes once the writes queued on the event loop right now have run, so that many
  /// writes arriving from async code share one flush (and one TLS record batch).
  private func scheduleFlush() {
    guard !inRead, !flushScheduled, let context else { return }
    flushScheduled = true
    context.eventLoop.assumeIsolated().execute { [self] in
      flushScheduled = false
      flushIfNeeded()
    }
  }

  private func writeMessageFrames(_ streamID: UInt32, _ message: ByteBuffer, endStream: Bool) {
    if message.readableBytes == 0 && endStream {
      // An empty END_STREAM frame means "half-close, no message": an empty message needs a
      // frame of its own first.
      write(Frame(type: .message, streamID: streamID, payload: message))
      write(Frame(type: .message, flags: .endStream, streamID: streamID, payload: message))
      return
    }
    let maxFrame = connection.remoteSettings.maxFrameSize
    if message.readableBytes <= maxFrame {
      // One frame, as nearly every message is: no slice of it.
      write(.message, flags: endStream ? .endStream : [], streamID: streamID, payload: message)
      return
    }
    var remaining = message
    repeat {
      let length = min(remaining.readableBytes, maxFrame)
      let chunk = remaining.readSlice(length: length)!
      var flags: FrameFlags = remaining.readableBytes > 0 ? .more : []
      if endStream, remaining.readableBytes == 0 { flags.insert(.endStream) }
      write(Frame(type: .message, flags: flags, streamID: streamID, payload: chunk))
    } while remaining.readableBytes > 0
  }

  private func writeReset(_ streamID: UInt32, code: StatusCode, message: String) {
    var wire = WireReset()
    wire.code = code.rawValue
    wire.message = TextCut.cut(message, toUTF8Bytes: statusMessageLimit)
    write(Frame(type: .reset, streamID: streamID, payload: serialize(wire)))
  }

  /// The most UTF-8 bytes of a status message in TRAILERS or RESET: half of the largest frame
  /// the peer accepts. A message quoting a request field (an id of megabytes, say) must not
  /// make a frame the peer refuses, which would end its whole connection over one call.
  private var statusMessageLimit: Int { Int(connection.remoteSettings.maxFrameSize) / 2 }

  /// Ends `streamID` at once, the way ``sendFinish(_:lastMessage:status:metadata:promise:)``
  /// does, when `lastMessage` (if any) and then the TRAILERS can go out right now with nothing
  /// queued ahead: then a writer on the loop needs no promise to learn the outcome, since the
  /// writes cannot fail or wait. Returns `false`, having done nothing, otherwise.
  ///
  /// The stream is looked up once, where the general path looks it up for each step.
  fileprivate func finishAtOnce(_ streamID: UInt32, lastMessage: ByteBuffer?, status: Status, metadata: Metadata) -> Bool {
    guard !closed, let box = streams[streamID], box.waitingForCredit.isEmpty, box.pendingTrailers == nil else { return false }
    switch box.machine.state {
    case .open, .halfClosedRemote: break
    case .halfClosedLocal, .closed: return false
    }
    if let lastMessage {
      guard box.machine.sendCredit > 0, lastMessage.readableBytes <= connection.remoteSettings.maxMessageSize,
        (try? box.machine.sendMessage(endStream: false)) == true
      else { return false }
      writeMessageFrames(streamID, lastMessage, endStream: false)
    }
    // Cannot fail: the stream is open on this side (checked above).
    try? box.machine.sendTrailers()
    writeTrailers(streamID, box, status: status, metadata: metadata)
    return true
  }

  fileprivate func sendMessage(_ streamID: UInt32, _ message: ByteBuffer, endStream: Bool, promise: EventLoopPromise<Void>?) {
    guard let box = streams[streamID] else {
      promise?.fail(RPCError.streamClosed)
      return
    }
    sendMessage(streamID, box, message, endStream: endStream, promise: promise)
  }

  /// ``sendMessage(_:_:endStream:promise:)`` on a stream already looked up.
  private func sendMessage(_ streamID: UInt32, _ box: StreamBox, _ message: ByteBuffer, endStream: Bool, promise: EventLoopPromise<Void>?) {
    guard message.readableBytes <= connection.remoteSettings.maxMessageSize else {
      // The peer would refuse it: fail here, without sending anything.
      promise?.fail(
        RPCError(
          code: .resourceExhausted,
          message: "message of \(message.readableBytes) bytes exceeds the peer's maximum message size of \(connection.remoteSettings.maxMessageSize)"))
      return
    }
    if !box.waitingForCredit.isEmpty {
      box.waitingForCredit.append((message, endStream, promise))
      return
    }
    do {
      guard try box.machine.sendMessage(endStream: endStream) else {
        box.waitingForCredit.append((message, endStream, promise))
        return
      }
    } catch {
      promise?.fail(RPCError(code: .internal, message: error.message, cause: error))
      return
    }
    writeMessageFrames(streamID, message, endStream: endStream)
    scheduleFlush()
    promise?.succeed()
  }

  private func drainWaitingWrites(_ streamID: UInt32, _ box: StreamBox) {
    while let next = box.waitingForCredit.first {
      let sent: Bool
      do {
        sent = try box.machine.sendMessage(endStream: next.endStream)
      } catch {
        next.promise?.fail(RPCError(code: .internal, message: error.message, cause: error))
        box.waitingForCredit.removeFirst()
        continue
      }
      guard sent else { return }
      box.waitingForCredit.removeFirst()
      writeMessageFrames(streamID, next.message, endStream: next.endStream)
      next.promise?.succeed()
    }
    if let trailers = box.pendingTrailers {
      box.pendingTrailers = nil
      sendTrailers(streamID, status: trailers.status, metadata: trailers.metadata, promise: trailers.promise)
    }
    scheduleFlush()
  }

  fileprivate func sendHalfClose(_ streamID: UInt32, promise: EventLoopPromise<Void>?) {
    guard let box = streams[streamID] else {
      promise?.fail(RPCError.streamClosed)
      return
    }
    if !box.waitingForCredit.isEmpty, let last = box.waitingForCredit.popLast() {
      // Fold the half-close into the last queued message.
      box.waitingForCredit.append((last.message, true, last.promise))
      promise?.succeed()
      return
    }
    do {
      try box.machine.sendEndStream()
    } catch {
      promise?.fail(RPCError(code: .internal, message: error.message, cause: error))
      return
    }
    write(Frame(type: .message, flags: .endStream, streamID: streamID, payload: ByteBuffer()))
    scheduleFlush()
    promise?.succeed()
  }

  fileprivate func sendResponseHeaders(_ streamID: UInt32, _ metadata: Metadata, promise: EventLoopPromise<Void>?) {
    guard let box = streams[streamID] else {
      promise?.fail(RPCError.streamClosed)
      return
    }
    do {
      try box.machine.sendResponseHeaders()
    } catch {
      promise?.fail(RPCError(code: .internal, message: error.message, cause: error))
      return
    }
    var wire = WireResponseHeaders()
    wire.metadata = metadata.wire
    var payload = serialize(wire)
    // Metadata the client's frames cannot hold (it would end the client's whole connection):
    // the headers go without it, and the handler learns why.
    let tooLarge = payload.readableBytes > Int(connection.remoteSettings.maxFrameSize)
    if tooLarge { payload = serialize(WireResponseHeaders()) }
    write(Frame(type: .headers, streamID: streamID, payload: payload))
    scheduleFlush()
    if tooLarge {
      promise?.fail(RPCError(code: .resourceExhausted, message: "response metadata larger than the client's frame size; sent without it"))
    } else {
      promise?.succeed()
    }
  }

  fileprivate func sendFinish(_ streamID: UInt32, lastMessage: ByteBuffer?, status: Status, metadata: Metadata, promise: EventLoopPromise<Void>?) {
    guard let box = streams[streamID] else {
      promise?.fail(RPCError.streamClosed)
      return
    }
    var status = status
    if let lastMessage {
      if lastMessage.readableBytes > connection.remoteSettings.maxMessageSize {
        // The peer would refuse it: the call fails instead of ending OK without its answer.
        status = Status(
          code: .resourceExhausted,
          message: "the response of \(lastMessage.readableBytes) bytes exceeds the peer's maximum message size of \(connection.remoteSettings.maxMessageSize)")
      } else {
        sendMessage(streamID, box, lastMessage, endStream: false, promise: nil)
      }
    }
    if box.pendingTrailers != nil {
      // Finished already (its TRAILERS wait for credit): the first finish stands.
      promise?.fail(RPCError(code: .internal, message: "the call was already finished"))
      return
    }
    if !box.waitingForCredit.isEmpty {
      box.pendingTrailers = (status, metadata, promise)
      return
    }
    sendTrailers(streamID, status: status, metadata: metadata, promise: promise)
  }

  private func sendTrailers(_ streamID: UInt32, status: Status, metadata: Metadata, promise: EventLoopPromise<Void>?) {
    guard let box = streams[streamID] else {
      promise?.fail(RPCError.streamClosed)
      return
    }
    do {
      try box.machine.sendTrailers()
    } catch {
      promise?.fail(RPCError(code: .internal, message: error.message, cause: error))
      return
    }
    writeTrailers(streamID, box, status: status, metadata: metadata)
    promise?.succeed()
  }

  /// Writes the TRAILERS of a stream whose state machine has accepted them, and closes it.
  private func writeTrailers(_ streamID: UInt32, _ box: StreamBox, status: Status, metadata: Metadata) {
    let payload: ByteBuffer?
    if status.code == .ok, status.message.isEmpty, metadata.isEmpty {
      payload = nil  // All fields at their defaults: protobuf encodes nothing.
    } else {
      var wire = WireTrailers()
      wire.code = status.code.rawValue
      wire.message = TextCut.cut(status.message, toUTF8Bytes: statusMessageLimit)
      wire.metadata = metadata.wire
      var bytes = serialize(wire)
      if bytes.readableBytes > Int(connection.remoteSettings.maxFrameSize) {
        // Metadata the peer's frames cannot hold: the status goes without it.
        wire.metadata = []
        bytes = serialize(wire)
      }
      payload = bytes
    }
    write(.trailers, streamID: streamID, payload: payload)
    scheduleFlush()
    if box.isServerStream {
      box.serverInbound?.finish()
      box.signal(.finished)
    }
    removeStream(streamID)
  }

  fileprivate func sendCancel(_ streamID: UInt32, _ error: RPCError) {
    guard let box = streams[streamID] else { return }
    box.machine.reset()
    writeReset(streamID, code: error.code, message: error.message)
    scheduleFlush()
    fail(box, error, reason: .reset(error.code))
    removeStream(streamID)
  }

  fileprivate func grantCredit(_ streamID: UInt32, _ count: Int) {
    guard let box = streams[streamID], box.machine.state != .closed else { return }
    box.machine.grantReceiveCredit(count)
    var payload = ByteBuffer()
    payload.writeInteger(UInt32(count))
    write(Frame(type: .credit, streamID: streamID, payload: payload))
    scheduleFlush()
  }

  private func makeCreditReturn(_ streamID: UInt32) -> CreditReturn {
    let loop = context!.eventLoop
    let bound = NIOLoopBound(self, eventLoop: loop)
    return CreditReturn(batch: max(1, configuration.settings.initialStreamCredit / 2)) { count in
      loop.execute { bound.value.grantCredit(streamID, count) }
    }
  }

  // MARK: Client streams

  fileprivate func openStream(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool, promise: EventLoopPromise<RPCClientStream>) {
    open(head, firstMessage: firstMessage, endStream: endStream, caller: .stream(promise))
  }

  /// Starts a unary call: HEADERS and the request go out in the next flush; the call's
  /// outcome resumes its task once the TRAILERS (or a failure) arrive.
  fileprivate func startUnary(_ call: UnaryCall) {
    guard !call.cancelled else {
      call.finish(.failure(RPCError(code: .cancelled, message: "the client cancelled the call")))
      return
    }
    call.phase = .waiting
    open(call.head, firstMessage: call.request, endStream: true, caller: .unary(call))
  }

  /// Cancels a unary call wherever it is: not yet seen, waiting for a stream, or open.
  fileprivate func cancelUnary(_ call: UnaryCall, _ error: RPCError) {
    switch call.phase {
    case .new:
      call.cancelled = true  // `startUnary`, still queued on the loop, fails it.
    case .waiting:
      pendingOpens.removeAll { pending in
        if case .unary(let waiting) = pending.caller { return waiting === call }
        return false
      }
      call.finish(.failure(error))
    case .open(let streamID):
      if let box = streams[streamID], box === call {
        sendCancel(streamID, error)
      }
    case .finished:
      break
    }
  }

  /// Opens a stream for a call now, or queues the call (a ``PendingOpen``, made only then)
  /// until the connection's settings arrive or a stream becomes free.
  private func open(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool, caller: PendingOpen.Caller) {
    guard !closed else {
      caller.fail(RPCError(code: .unavailable, message: "the connection is closed"))
      return
    }
    if !pendingOpens.isEmpty || connection.state == .awaitingSettings {
      queue(PendingOpen(head: head, firstMessage: firstMessage, endStream: endStream, caller: caller))
      return
    }
    switch connection.openStream() {
    case .wait:
      queue(PendingOpen(head: head, firstMessage: firstMessage, endStream: endStream, caller: caller))
    case .unavailable(let why):
      caller.fail(RPCError(code: .unavailable, message: why))
    case .open(let streamID):
      startClientStream(streamID, head, firstMessage: firstMessage, endStream: endStream, caller: caller)
    }
  }

  /// Queues a call until a stream can open. Its deadline runs from now: a call still waiting
  /// when it passes fails DEADLINE_EXCEEDED (it never reached the server).
  private func queue(_ pending: PendingOpen) {
    var pending = pending
    if let timeout = pending.head.timeout, let loop = context?.eventLoop {
      pendingSerial &+= 1
      let serial = pendingSerial
      let expiry = loop.assumeIsolated().scheduleTask(in: .nanoseconds(max(1, timeout.saturatingUnits(of: 1_000_000_000)))) { [self] in
        guard let index = pendingOpens.firstIndex(where: { $0.queued?.serial == serial }) else { return }
        let expired = pendingOpens.remove(at: index)
        expired.caller.fail(RPCError(code: .deadlineExceeded, message: "the call's deadline of \(timeout) passed before a stream was free"))
      }
      pending.queued = (NIODeadline.now(), serial, expiry)
    }
    pendingOpens.append(pending)
  }

  private func openPendingStreams() {
    while let next = pendingOpens.first {
      switch connection.openStream() {
      case .wait:
        return
      case .unavailable(let why):
        pendingOpens.removeFirst()
        next.fail(RPCError(code: .unavailable, message: why))
      case .open(let streamID):
        pendingOpens.removeFirst()
        var head = next.head
        if let queued = next.queued, let timeout = head.timeout {
          queued.expiry.cancel()
          // The server gets the time left, not the whole timeout again.
          let waited = Duration.nanoseconds((NIODeadline.now() - queued.at).nanoseconds)
          head.timeout = max(.microseconds(1), timeout - waited)
        }
        startClientStream(streamID, head, firstMessage: next.firstMessage, endStream: next.endStream, caller: next.caller)
      }
    }
  }

  /// The HEADERS payload of a request: serialised once per method for the common head with
  /// no metadata and no deadline, every time otherwise.
  private func requestHeadersPayload(_ head: RequestHead) -> ByteBuffer {
    let cacheable = head.timeout == nil && head.metadata.isEmpty
    if cacheable, let cached = requestHeadersCache[head.method] { return cached }
    var wire = WireRequestHeaders()
    wire.method = head.method
    if let timeout = head.timeout {
      wire.timeoutMicros = UInt64(max(1, timeout.saturatingUnits(of: 1_000_000)))
    }
    wire.metadata = head.metadata.wire
    let payload = serialize(wire)
    if cacheable {
      if requestHeadersCache.count >= 64 { requestHeadersCache.removeAll() }
      requestHeadersCache[head.method] = payload
    }
    return payload
  }

  private func startClientStream(
    _ streamID: UInt32, _ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool, caller: PendingOpen.Caller
  ) {
    guard let context else {
      caller.fail(RPCError(code: .unavailable, message: "the connection is closed"))
      return
    }
    if let firstMessage, firstMessage.readableBytes > connection.remoteSettings.maxMessageSize {
      // The server would refuse it: fail the call here, before any frame is sent.
      _ = connection.streamClosed()
      caller.fail(
        RPCError(
          code: .resourceExhausted,
          message: "message of \(firstMessage.readableBytes) bytes exceeds the server's maximum message size of \(connection.remoteSettings.maxMessageSize)"
        ))
      openPendingStreams()
      return
    }
    let headers = requestHeadersPayload(head)
    if headers.readableBytes > Int(connection.remoteSettings.maxFrameSize) {
      // A frame the server would refuse, ending the whole connection: this call fails alone.
      _ = connection.streamClosed()
      caller.fail(
        RPCError(
          code: .resourceExhausted,
          message: "request headers of \(headers.readableBytes) bytes (metadata) exceed the server's frame size of \(connection.remoteSettings.maxFrameSize)"))
      openPendingStreams()
      return
    }
    var machine = StreamStateMachine(
      role: .client,
      sendCredit: connection.remoteSettings.initialStreamCredit,
      receiveCredit: configuration.settings.initialStreamCredit,
      maxMessageSize: configuration.settings.maxMessageSize
    )
    let headersFlags: FrameFlags = (firstMessage == nil && endStream) ? .endStream : []
    if headersFlags.contains(.endStream) { try? machine.sendEndStream() }
    let box: StreamBox
    var opened: (promise: EventLoopPromise<RPCClientStream>, inbound: InboundQueue<ClientInboundPart>)?
    switch caller {
    case .stream(let promise):
      let inbound = InboundQueue<ClientInboundPart>()
      box = StreamBox(machine: machine, client: inbound)
      opened = (promise, inbound)
    case .unary(let call):
      call.machine = machine
      box = call
      call.phase = .open(streamID)
    }
    streams[streamID] = box
    idleTimer?.cancel()
    write(.headers, flags: headersFlags, streamID: streamID, payload: headers)
    if let timeout = head.timeout {
      let nanos = timeout.saturatingUnits(of: 1_000_000_000)
      box.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(max(1, nanos))) { [self] in
        sendCancel(streamID, RPCError(code: .deadlineExceeded, message: "the call's deadline of \(timeout) passed"))
      }
    }
    if let firstMessage {
      sendMessage(streamID, box, firstMessage, endStream: endStream, promise: nil)
    }
    scheduleFlush()
    if let opened {
      let stream = RPCClientStream(
        inbound: RPCInbound(opened.inbound, creditReturn: makeCreditReturn(streamID)) { part in
          if case .message = part { return true }
          return false
        },
        writer: NIOStreamWriter(core: streamWriterCore!, streamID: streamID)
      )
      opened.promise.succeed(stream)
    }
  }

  // MARK: Errors, deadlines, shutdown

  private func serverDeadlineExpired(_ streamID: UInt32) {
    guard let box = streams[streamID] else { return }
    box.deadline = nil
    if box.isServerStream { box.signal(.deadlineExceeded) }
    // With writes waiting for credit (the handler's TRAILERS perhaps among them, with the
    // promise its `finish` waits on) nothing may be queued behind them: the RESET below ends
    // the call and fails every one of them.
    if box.waitingForCredit.isEmpty && box.pendingTrailers == nil {
      sendFinish(streamID, lastMessage: nil, status: Status(code: .deadlineExceeded, message: "the call's deadline passed"), metadata: [:], promise: nil)
    }
    if let box = streams[streamID] {
      // Blocked by credit: the deadline wins anyway.
      box.machine.reset()
      writeReset(streamID, code: .deadlineExceeded, message: "the call's deadline passed")
      fail(box, RPCError(code: .deadlineExceeded, message: "the call's deadline passed"), reason: .deadlineExceeded)
      removeStream(streamID)
    }
    scheduleFlush()
  }

  private func streamError(_ streamID: UInt32, _ violation: ProtocolViolation) {
    logger.debug("stream error", metadata: ["hourglass.stream_id": "\(streamID)", "hourglass.error": "\(violation)"])
    guard let box = streams[streamID] else { return }
    box.machine.reset()
    writeReset(streamID, code: violation.kind.code, message: violation.message)
    fail(box, violation.rpcError, reason: .reset(violation.kind.code))
    removeStream(streamID)
    scheduleFlush()
  }

  private func connectionError(_ violation: ProtocolViolation) {
    guard !closed else { return }
    logger.info("closing connection after a protocol violation", metadata: ["hourglass.error": "\(violation)"])
    var wire = WireGoAway()
    wire.lastStreamID = isServer ? connection.highestStreamID : 0
    wire.code = violation.kind.code.rawValue
    wire.message = violation.message
    write(Frame(type: .goAway, streamID: 0, payload: serialize(wire)))
    flushIfNeeded()
    tearDown(violation.rpcError)
    context?.close(promise: nil)
  }

  /// Sends GOAWAY and closes once the streams already accepted have finished.
  public func startGracefulShutdown() {
    guard let last = connection.sendGoAway() else { return }
    var wire = WireGoAway()
    wire.lastStreamID = last
    wire.code = StatusCode.unavailable.rawValue
    wire.message = "shutting down"
    write(Frame(type: .goAway, streamID: 0, payload: serialize(wire)))
    flushIfNeeded()
    for pending in pendingOpens {
      pending.fail(RPCError(code: .unavailable, message: "the connection is going away"))
    }
    pendingOpens.removeAll()
    if connection.openStreams == 0 { closeConnection() }
  }

  private func closeConnection() {
    guard !closed, let context else { return }
    flushIfNeeded()
    tearDown(RPCError(code: .unavailable, message: "the connection closed"))
    context.close(promise: nil)
  }

  private func scheduleKeepalive() {
    guard let interval = configuration.keepaliveInterval, let context, !closed else { return }
    keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in
      keepaliveTick()
      scheduleKeepalive()
    }
  }

  private func keepaliveTick() {
    guard !closed, let context else { return }
    if readSinceLastKeepalive {
      readSinceLastKeepalive = false
      return
    }
    guard keepaliveDeadline == nil else { return }
    var payload = context.channel.allocator.buffer(capacity: 8)
    let token = UInt64(context.eventLoop.now.uptimeNanoseconds)
    outstandingPing = token
    payload.writeInteger(token)
    write(Frame(type: .ping, streamID: 0, payload: payload))
    flushIfNeeded()
    keepaliveDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: configuration.keepaliveTimeout) { [self] in
      guard !closed else { return }
      logger.info("closing connection: keepalive PING not answered in time")
      tearDown(RPCError(code: .unavailable, message: "the peer did not answer a keepalive PING"))
      self.context?.close(promise: nil)
    }
  }

  private func armIdleTimer() {
    guard let idle = configuration.idleTimeout, let context, streams.isEmpty, !closed else { return }
    idleTimer?.cancel()
    idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: idle) { [self] in
      guard streams.isEmpty else { return }
      logger.debug("closing idle connection")
      startGracefulShutdown()
    }
  }

  private func fail(_ box: StreamBox, _ error: RPCError, reason: StreamTerminationReason) {
    box.deadline?.cancel()
    box.deadline = nil
    if box.isServerStream {
      box.serverInbound?.finish(throwing: error)
      box.signal(reason)
    }
    if let client = box.client {
      client.finish(throwing: error)
    }
    box.unary?.finish(.failure(error))
    for waiting in box.waitingForCredit {
      waiting.promise?.fail(error)
    }
    box.waitingForCredit.removeAll()
    box.pendingTrailers?.promise?.fail(error)
    box.pendingTrailers = nil
  }

  private func removeStream(_ streamID: UInt32) {
    guard let box = streams.removeValue(forKey: streamID) else { return }
    box.deadline?.cancel()
    // Writes still waiting for credit can never be sent: the stream has ended (the peer's
    // TRAILERS or RESET arrived while they waited). Their writers learn it now.
    if !box.waitingForCredit.isEmpty || box.pendingTrailers != nil {
      for waiting in box.waitingForCredit {
        waiting.promise?.fail(RPCError.streamClosed)
      }
      box.waitingForCredit.removeAll()
      box.pendingTrailers?.promise?.fail(RPCError.streamClosed)
      box.pendingTrailers = nil
    }
    let drained = connection.streamClosed()
    if !isServer { openPendingStreams() }
    if drained {
      closeConnection()
    } else if streams.isEmpty {
      armIdleTimer()
    }
  }

  private func tearDown(_ error: RPCError) {
    guard !closed else { return }
    closed = true
    connection.close()
    settingsTimer?.cancel()
    keepaliveTimer?.cancel()
    keepaliveDeadline?.cancel()
    idleTimer?.cancel()
    let open = streams
    streams.removeAll()
    for (_, box) in open {
      fail(box, error, reason: .connectionClosed)
    }
    for pending in pendingOpens {
      pending.fail(error)
    }
    pendingOpens.removeAll()
    onClose?()
  }

  // MARK: Payload helpers

  private func decode<M: SwiftProtobuf.Message>(_ payload: ByteBuffer, _ what: String) throws(ProtocolViolation) -> M {
    do {
      return try M(serializedBytes: payload.readableBytesSpan)
    } catch {
      throw ProtocolViolation(.malformedFrame, "\(what) payload is not a valid message: \(error)")
    }
  }

  private func serialize(_ message: some SwiftProtobuf.Message, _ allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
    let bytes: [UInt8] = (try? message.serializedBytes()) ?? []
    var buffer = allocator.buffer(capacity: bytes.count)
    buffer.writeBytes(bytes)
    return buffer
  }
}

@available(*, unavailable)
extension RPCConnectionHandler: Sendable {}

/// Asks a connection handler to drain: send GOAWAY, finish accepted streams, then close.
public struct GracefulShutdownEvent: Sendable, Hashable {
  public init() {}
}

/// The async face of one stream of an ``RPCConnectionHandler``.
///
/// Two words (the connection's shared ``Core`` and the stream id), so that it fits in an
/// existential without a box of its own. A call's last write (`finish`) made on the
/// connection's event loop (a handler task preferring that loop as its executor) goes straight
/// into the handler, with no promise, when it can go out at once.
struct NIOStreamWriter: ServerStreamWriter, ClientStreamWriter {
  /// What every stream writer of one connection shares: the handler and its loop.
  ///
  /// Unchecked: `handler` is only touched on `loop`, checked with `inEventLoop` or reached
  /// through `execute`.
  final class Core: @unchecked Sendable {
    let handler: RPCConnectionHandler
    let loop: any EventLoop

    init(handler: RPCConnectionHandler, loop: any EventLoop) {
      self.handler = handler
      self.loop = loop
    }

    /// Runs `body` on the loop (at once when already there) and waits for its promise.
    func onLoop(_ body: @escaping @Sendable (RPCConnectionHandler, EventLoopPromise<Void>) -> Void) async throws {
      let promise = loop.makePromise(of: Void.self)
      if loop.inEventLoop {
        body(handler, promise)
      } else {
        loop.execute { body(self.handler, promise) }
      }
      try await promise.futureResult.get()
    }
  }

  let core: Core
  let streamID: UInt32

  init(core: Core, streamID: UInt32) {
    self.core = core
    self.streamID = streamID
  }

  func writeHeaders(_ metadata: Metadata) async throws {
    let id = streamID
    try await core.onLoop { $0.sendResponseHeaders(id, metadata, promise: $1) }
  }

  func writeMessage(_ message: ByteBuffer) async throws {
    try await writeMessage(message, endStream: false)
  }

  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) async throws {
    if finishWithoutWaiting(lastMessage: lastMessage, status: status, metadata: metadata) { return }
    let id = streamID
    try await core.onLoop { $0.sendFinish(id, lastMessage: lastMessage, status: status, metadata: metadata, promise: $1) }
  }

  func finishWithoutWaiting(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) -> Bool {
    guard core.loop.inEventLoop else { return false }
    return core.handler.finishAtOnce(streamID, lastMessage: lastMessage, status: status, metadata: metadata)
  }

  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata, then ended: @escaping @Sendable () -> Void) {
    let (id, core) = (streamID, self.core)
    let send: @Sendable () -> Void = {
      if core.handler.finishAtOnce(id, lastMessage: lastMessage, status: status, metadata: metadata) {
        ended()
        return
      }
      let promise = core.loop.makePromise(of: Void.self)
      promise.futureResult.whenComplete { _ in ended() }
      core.handler.sendFinish(id, lastMessage: lastMessage, status: status, metadata: metadata, promise: promise)
    }
    if core.loop.inEventLoop {
      send()
    } else {
      // One job on the loop, no task: how a reply made on another thread (a store's writer
      // answering a call handled on the loop) goes out.
      core.loop.execute(send)
    }
  }

  func writeMessage(_ message: ByteBuffer, endStream: Bool) async throws {
    // Always through a promise, even on the loop: waiting for it lets the loop flush and read
    // between the messages of a stream.
    let id = streamID
    try await core.onLoop { $0.sendMessage(id, message, endStream: endStream, promise: $1) }
  }

  func halfClose() async throws {
    let id = streamID
    try await core.onLoop { $0.sendHalfClose(id, promise: $1) }
  }

  func cancel(_ error: RPCError) {
    let id = streamID
    let core = self.core
    // Always later, never from inside the caller: a cancellation handler may run while the
    // connection handler is in the middle of something else on this loop.
    core.loop.execute { core.handler.sendCancel(id, error) }
  }
}

/// Opens client streams on a channel whose pipeline ends with an ``RPCConnectionHandler``.
public struct NIOClientStreamOpener: Sendable {
  let handler: NIOLoopBound<RPCConnectionHandler>
  let loop: any EventLoop

  /// Wraps a client handler already in a pipeline on `loop`.
  public init(handler: RPCConnectionHandler, loop: any EventLoop) {
    self.handler = NIOLoopBound(handler, eventLoop: loop)
    self.loop = loop
  }

  /// Opens a stream on the connection.
  public func openStream(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool) async throws -> RPCClientStream {
    let promise = loop.makePromise(of: RPCClientStream.self)
    let handler = self.handler
    loop.execute { handler.value.openStream(head, firstMessage: firstMessage, endStream: endStream, promise: promise) }
    return try await promise.futureResult.get()
  }

  /// Makes one unary call: sends the request and waits for the outcome, with a single hop
  /// onto the event loop (none when the calling task already runs there) and a single
  /// resumption, and no stream object. Cancelling the calling task resets the stream.
  ///
  /// Throws ``CallNotStarted`` when the call failed before its stream opened.
  package func unary(_ head: RequestHead, request: ByteBuffer) async throws -> UnaryResponse {
    let call = UnaryCall(head: head, request: request)
    let handler = self.handler
    let loop = self.loop
    return try await withTaskCancellationHandler {
      try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<UnaryResponse, any Error>) in
        call.continuation = continuation
        if loop.inEventLoop {
          // A task that prefers this loop as its executor: no hop.
          handler.value.startUnary(call)
        } else {
          loop.execute { handler.value.startUnary(call) }
        }
      }
    } onCancel: {
      loop.execute { handler.value.cancelUnary(call, RPCError(code: .cancelled, message: "the client cancelled the call")) }
    }
  }

  /// Makes one unary call without a task: `completion` is told the outcome on the loop. A call
  /// that fails before its stream opened (``CallNotStarted``) goes to `notStarted` instead, when
  /// there is one (a transport retrying it on a fresh connection).
  package func unary(
    _ head: RequestHead, request: ByteBuffer, notStarted: (any UnaryCallRetrying)? = nil,
    completion: @escaping @Sendable (Result<UnaryResponse, any Error>) -> Void
  ) {
    let call = UnaryCall(head: head, request: request)
    call.completion = completion
    call.notStarted = notStarted
    let handler = self.handler
    if loop.inEventLoop {
      handler.value.startUnary(call)
    } else {
      loop.execute { handler.value.startUnary(call) }
    }
  }

  /// Starts a graceful drain of the connection.
  public func startGracefulShutdown() {
    let handler = self.handler
    loop.execute { handler.value.startGracefulShutdown() }
  }
}

/// Takes over a callback unary call that failed before its stream opened
/// (``NIOClientStreamOpener/unary(_:request:notStarted:completion:)``): one object per
/// connection rather than a closure per call.
package protocol UnaryCallRetrying: AnyObject, Sendable {
  /// Makes the call again (or fails it), telling `completion` the outcome.
  func retry(_ head: RequestHead, request: ByteBuffer, completion: @escaping @Sendable (Result<UnaryResponse, any Error>) -> Void)
}

/// A unary call failed before its stream opened (the connection was closing or going away),
/// so the server never saw it and it can be retried on another connection.
package struct CallNotStarted: Error {
  /// Why.
  package var error: RPCError
}

/// The event loop's record of one open stream of an ``RPCConnectionHandler``.
///
/// A server stream's box is also its ``StreamTermination`` (a subclass), and a client's unary
/// call is its own box (``UnaryCall`` is a subclass): one object per call on either side.
///
/// Unchecked: only the ``StreamTermination`` part, which locks, is used off the event loop
/// (by the handler task of a server stream); everything else is touched on the loop only.
fileprivate class StreamBox: StreamTermination, @unchecked Sendable {
  // Unchecked exclusivity, as for the handler's own state: touched only on the loop.
  @exclusivity(unchecked) var machine: StreamStateMachine
  /// Whether this is a server stream, whose termination this box is.
  let isServerStream: Bool
  /// A server stream's request queue (`nil` for a unary call, whose one request was handed
  /// to the handler with the stream).
  let serverInbound: InboundQueue<ByteBuffer>?
  let client: InboundQueue<ClientInboundPart>?
  /// Whether this box is a ``UnaryCall``, so that finding the call takes no dynamic cast.
  private let isUnary: Bool
  @exclusivity(unchecked) var waitingForCredit = WaitingWrites()
  @exclusivity(unchecked) var pendingTrailers: (status: Status, metadata: Metadata, promise: EventLoopPromise<Void>?)?
  @exclusivity(unchecked) var deadline: Scheduled<Void>?

  /// A server stream's box.
  init(machine: StreamStateMachine, serverInbound: InboundQueue<ByteBuffer>?) {
    self.machine = machine
    self.isServerStream = true
    self.serverInbound = serverInbound
    self.client = nil
    self.isUnary = false
  }

  /// A client stream's box: `client` receives what arrives, unless it is a unary call.
  init(machine: StreamStateMachine, client: InboundQueue<ClientInboundPart>?, isUnary: Bool = false) {
    self.machine = machine
    self.isServerStream = false
    self.serverInbound = nil
    self.client = client
    self.isUnary = isUnary
  }

  /// The client's unary call this box is, if it is one: its outcome goes there instead of
  /// through `client`.
  final var unary: UnaryCall? {
    isUnary ? unsafeDowncast(self, to: UnaryCall.self) : nil
  }
}

/// A stream's messages waiting for credit, oldest first.
///
/// No `Deque` until a message has to wait, which most streams never do: an empty `Deque`
/// shares one global storage object, and retaining and releasing it for every call made both
/// event loops write to the same reference count.
fileprivate struct WaitingWrites: Sequence {
  typealias Element = (message: ByteBuffer, endStream: Bool, promise: EventLoopPromise<Void>?)

  private var queue: Deque<Element>?

  var isEmpty: Bool { queue?.isEmpty ?? true }
  var first: Element? { queue?.first }

  mutating func append(_ element: Element) {
    if queue == nil { queue = Deque() }
    queue!.append(element)
  }

  @discardableResult
  mutating func removeFirst() -> Element { queue!.removeFirst() }

  mutating func popLast() -> Element? { queue?.popLast() }

  mutating func removeAll() { queue = nil }

  func makeIterator() -> Deque<Element>.Iterator { (queue ?? Deque()).makeIterator() }
}

/// One unary call on the client side of a connection.
///
/// It is also the call's stream box once its stream opens (its `machine` is set then).
///
/// Unchecked: the calling task sets `continuation` and then hands the call to the event loop
/// through `execute`; from then on only the loop touches it.
fileprivate final class UnaryCall: StreamBox, @unchecked Sendable {
  enum Phase {
    /// The loop has not seen the call yet.
    case new
    /// Waiting for a stream (SETTINGS not yet received, or the stream limit reached).
    case waiting
    /// On this stream.
    case open(UInt32)
    /// The task has been resumed.
    case finished
  }

  let head: RequestHead
  let request: ByteBuffer
  @exclusivity(unchecked) var continuation: UnsafeContinuation<UnaryResponse, any Error>?
  /// Told the outcome on the loop instead of a continuation (``NIOClientStreamOpener/unary(_:request:completion:)``).
  @exclusivity(unchecked) var completion: (@Sendable (Result<UnaryResponse, any Error>) -> Void)?
  /// Takes the call over if it fails before its stream opened (callback calls only).
  @exclusivity(unchecked) var notStarted: (any UnaryCallRetrying)?
  @exclusivity(unchecked) var phase = Phase.new
  @exclusivity(unchecked) var cancelled = false
  @exclusivity(unchecked) var headers = Metadata()
  @exclusivity(unchecked) var message: ByteBuffer?

  init(head: RequestHead, request: ByteBuffer) {
    self.head = head
    self.request = request
    // A placeholder until the stream opens with the connection's settings.
    super.init(machine: StreamStateMachine(role: .client, sendCredit: 0, receiveCredit: 0, maxMessageSize: 0), client: nil, isUnary: true)
  }

  /// A response message arrived; a second one fails the call.
  func receive(_ message: ByteBuffer) {
    guard self.message == nil else {
      finish(.failure(RPCError(code: .internal, message: "the server sent more than one response message")))
      return
    }
    self.message = message
  }

  func complete(status: consuming Status, trailers: consuming Metadata) {
    // Not through `finish`: a success needs none of its failure handling, and a `Result` that
    // is matched there is copied, the response with it.
    guard claimEnding() else { return }
    // The call is over: its headers and message move into the response rather than being
    // copied (each copy retains every part).
    var headers = Metadata()
    swap(&headers, &self.headers)
    let message = self.message.take()
    // The response is made where it is handed over: one bound to a name first was copied
    // there (four retains), `consume` or not.
    if let continuation = continuation.take() {
      continuation.resume(returning: UnaryResponse(headers: headers, message: message, status: status, trailers: trailers))
    } else if let completion = completion.take() {
      completion(.success(UnaryResponse(headers: headers, message: message, status: status, trailers: trailers)))
    }
  }

  /// Whether the call is still to be ended (and now is): true once only.
  private func claimEnding() -> Bool {
    if case .finished = phase { return false }
    phase = .finished
    return true
  }

  /// Fails the call before its stream opened: when unavailable, as ``CallNotStarted``.
  func failBeforeStart(_ error: RPCError) {
    finish(.failure(error.code == .unavailable ? CallNotStarted(error: error) : error))
  }

  /// Resumes the calling task, or tells the completion, once.
  func finish(_ result: consuming Result<UnaryResponse, any Error>) {
    guard claimEnding() else { return }
    if let continuation = continuation.take() {
      continuation.resume(with: result)
      return
    }
    guard let completion = completion.take() else { return }
    if case .failure(let error) = result, error is CallNotStarted, let notStarted {
      notStarted.retry(head, request: request, completion: completion)
      return
    }
    completion(result)
  }
}

extension Metadata {
  init(wire: [WireMetadataEntry]) {
    self.init()
    for entry in wire {
      switch entry.value {
      case .text(let text): add(entry.key, text)
      case .binary(let bytes): add(entry.key, bytes: Array(bytes))
      case nil: add(entry.key, "")
      }
    }
  }

  var wire: [WireMetadataEntry] {
    entries.map { entry in
      var wire = WireMetadataEntry()
      wire.key = entry.key
      switch entry.value {
      case .text(let text): wire.text = text
      case .binary(let bytes): wire.binary = Data(bytes)
      }
      return wire
    }
  }
}

extension Duration {
  /// The duration in whole `1 / perSecond` units, saturating at `Int64`'s range: a caller's
  /// timeout of centuries is a deadline that never comes, not an overflow.
  func saturatingUnits(of perSecond: Int64) -> Int64 {
    let (seconds, attoseconds) = components
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: perSecond)
    if overflow { return seconds < 0 ? .min : .max }
    let (sum, carried) = scaled.addingReportingOverflow(attoseconds / (1_000_000_000_000_000_000 / perSecond))
    return carried ? (seconds < 0 ? .min : .max) : sum
  }
}
