"""Matchers: from a pair and source keypoints to predicted target keypoints.

* :mod:`~sdcorr.matchers.base`: the :class:`Matcher` interface, :class:`MatchResult`, progress counting;
* :mod:`~sdcorr.matchers.prompt`: the paper's method (:class:`PromptMatcher`), with its work batching
  (:mod:`~sdcorr.matchers.batching`), its crop-latent store (:mod:`~sdcorr.matchers.crops`) and the
  bounded store both it and the fits use (:mod:`~sdcorr.matchers.lru`);
* :mod:`~sdcorr.matchers.nearest`: nearest-neighbour matching of dense descriptors;
* :mod:`~sdcorr.matchers.one_call`: :func:`match`, the one-call API for notebooks.
"""
