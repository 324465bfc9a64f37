"""``ofs consume``: the Kafka ingestion daemon (extra ``[consumer]``: kafka-python, prometheus-client).

Reads ``persist.Query`` messages from a topic in a consumer group and writes them through
:meth:`~online_feature_store.feature_store.FeatureStore.persist_wire`, at least once, with a dead-letter
topic for messages that can never be stored. Configuration: :mod:`online_feature_store.consumer.config`;
the loop: :mod:`online_feature_store.consumer.daemon`; health and metrics:
:mod:`online_feature_store.consumer.health`. Nothing is imported from Kafka until a consumer is built.
"""
