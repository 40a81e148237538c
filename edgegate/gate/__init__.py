"""The gate's flow: the whole run, one model, one model x device, candidates, the cache, the base commit, plan/merge, device runners."""
