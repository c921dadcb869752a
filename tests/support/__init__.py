"""This repository's own test harness: broker set-ups only our tests need (Sentinel groups, NATS
clusters, NKeys/JWT operators, throwaway TLS certificates) and the fixtures that start them. The
wheel ships only what users may use (:mod:`channels_neffos.testing`)."""
