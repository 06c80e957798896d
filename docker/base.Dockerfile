# The upstream base of docker/Dockerfile, pinned by digest (a tag can be moved, a digest cannot):
# the one line that names it. docker/build.sh pulls it and passes it as BASE_IMAGE (or a local
# Debian base of the release the tag ends in, where it cannot be pulled). A file of its own because
# Dependabot (.github/dependabot.yml) reads FROM lines, not ARG defaults: it proposes the new digest
# here when the tag moves. Not an image that is built.
# The digest: the tag's multi-platform index as other public projects pin it (Python 3.13.15 on
# Debian 13.6, 2026-09).
FROM python:3.13-slim-trixie@sha256:9d2e5553305c7c7b0097999bb17187c69b921ccd6bc9d40e4bb5ebe652c00285
