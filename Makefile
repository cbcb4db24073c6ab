# Conveniences; each target is one script that also works without make.
.PHONY: deb test demo

deb:
	packaging/build-deb

test:
	bash .ci/run

demo:
	./demo/run
