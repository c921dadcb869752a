"""The core of the layers (private: nothing here is API): one router per layer and event loop,
and its parts.

The public layer (:mod:`channels_neffos.channel_layer`) validates a call, encodes the message
once and hands it to :class:`~channels_neffos._core.router.Router`; the router routes it and
delegates to its parts — :mod:`.mailboxes`, :mod:`.groups`, :mod:`.outbox`, :mod:`.requests`,
:mod:`.fetchers`, :mod:`.roster`, :mod:`.broker_status` — and to the transport. Each part gets
the frozen :class:`~channels_neffos._core.settings.LayerSettings` and narrow callables, never the
router; :mod:`.names` is the broker name scheme, :mod:`.asks` the ask message format,
:mod:`.validation` the checks. Calls go one way, down; what arrives from the broker comes up
through the callbacks the router handed out.
"""
