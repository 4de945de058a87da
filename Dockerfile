# flowcam-pipeline as a workflow step: the container's entrypoint is the operation bridge,
# so a workflow system runs one task per container with one JSON request, e.g.
#
#   docker run --rm -v /data:/data flowcam-pipeline ReadMetadata \
#     '{"inputs": {"lst": ["/data/session/session.lst"]}, "outputs": "/data/step1"}'
#
# A per-task image for runners that pass only the JSON (Stage2-style) sets the task:
#
#   docker build --build-arg FLOWCAM_TASK=DecollageImages -t flowcam-decollage .
#   docker run --rm -v /data:/data flowcam-decollage '{"inputs": ..., "outputs": ...}'
#
# (see the README's "Tasks as operations"). Multi-stage: built with the Rust image, run on
# a slim Debian with only the CA certificates the S3 and API clients need.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin flowcam-pipeline

FROM debian:bookworm-slim
ARG FLOWCAM_TASK=
ENV FLOWCAM_TASK=${FLOWCAM_TASK}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/flowcam-pipeline /usr/local/bin/flowcam-pipeline
WORKDIR /work
ENTRYPOINT ["flowcam-pipeline", "operation"]
CMD ["--help"]
