"""What people look at: pictures (:mod:`~sdcorr.pages.plots`), a run's ``index.html``
(:mod:`~sdcorr.pages.index`) with its pair viewer (:mod:`~sdcorr.pages.viewer` for the per-pair files,
:mod:`~sdcorr.pages.viewer_section` for the page's section, ``viewer.js``/``viewer.css``), and the page of
``sdcorr compare`` (:mod:`~sdcorr.pages.compare`). Pure functions from records to pictures and HTML."""
